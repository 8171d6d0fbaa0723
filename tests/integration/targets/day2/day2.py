# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the day2 target needs to see and set up outside Ansible (run by runme.sh), beside the helpers every target
shares (../setup_temperstack_stand_in/ts_helpers.py: the requests the stand-in received, the test server's databases).

The stand-in (standard library only):
    day2.py payloads STAND_IN_URL FILE     write to FILE, as JSON, {"acked": {ALERT_ID: PAYLOAD}, "stated": {...}}:
                                           each alert's payload in its last acknowledged request, and in its last
                                           request whatever the answer

The ledger, on either backend (SPEC: a SQLite file's path, or a postgresql:// URL):
    day2.py dump SPEC                      every row of every table of the ledger, in a stable text form
                                           ("missing" for a file that does not exist, "no schema" for a database
                                           without the schema temperstack), to compare before and after a
                                           read-only run

The documentation:
    day2.py example PLAYBOOK               write the decommissioning example of the EXAMPLES of
                                           plugins/modules/alert_info.py, exactly as documented, as the tasks of
                                           a play on localhost; print the host it decommissions

Nothing here prints a key or a password.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import sys
import typing as t
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'setup_temperstack_stand_in'))
# pylint: disable-next=wrong-import-position
from ts_helpers import SCHEMA, collection_root, connect_url, run, stand_in_records

# How the decommissioning example of alert_info's EXAMPLES begins: the task that finds the host's open alerts.
EXAMPLE_MODULE = 'temperstack.alerting.alert_info'


def dump(spec: str) -> list[str]:
    """Every row of every table, sorted, with each table's name in front."""
    if spec.startswith(('postgresql:', 'postgres:')):
        with connect_url(spec, 'the ledger\'s') as conn:
            tables = [row[0] for row in conn.execute(
                'SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1', (SCHEMA,)
            ).fetchall()]
            if not tables:
                return ['no schema']
            return [f'{table} {json.dumps(list(row), default=str)}' for table in tables
                    for row in sorted(conn.execute(f'SELECT * FROM {SCHEMA}.{table}').fetchall(), key=repr)]
    if not os.path.exists(spec):
        return ['missing']
    conn = sqlite3.connect(f'file:{urllib.parse.quote(spec)}?mode=ro', uri=True)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        ).fetchall()]
        return [f'{table} {json.dumps(list(row))}' for table in tables
                for row in sorted(conn.execute(f'SELECT * FROM {table}').fetchall(), key=repr)]
    finally:
        conn.close()


def decommission_example() -> tuple[str, str]:
    """The decommissioning example of alert_info's EXAMPLES, as documented, and the host it decommissions.

    It is the alert_info task that filters by ``host``, and every task after it that loops over what that task
    registered. The text is copied line for line, so that what the documentation shows is what runs.
    """
    import yaml  # pylint: disable=import-outside-toplevel

    path = os.path.join(collection_root(), 'plugins', 'modules', 'alert_info.py')
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    examples = next(
        (node.value.value for node in tree.body if isinstance(node, ast.Assign)
         and any(isinstance(target, ast.Name) and target.id == 'EXAMPLES' for target in node.targets)),
        None,
    )
    if not isinstance(examples, str):
        raise SystemExit(f'{path} has no EXAMPLES')
    # Top-level tasks, each with the comment lines just above it.
    blocks: list[list[str]] = []
    pending: list[str] = []
    for line in examples.strip('\n').splitlines():
        if line.startswith('- '):
            blocks.append(pending + [line])
            pending = []
        elif line.startswith('#') or not blocks:
            pending.append(line)
        else:
            blocks[-1].append(line)
    tasks = [yaml.safe_load('\n'.join(block))[0] for block in blocks]
    start = next((index for index, task in enumerate(tasks)
                  if isinstance(task.get(EXAMPLE_MODULE), dict) and 'host' in task[EXAMPLE_MODULE]), None)
    if start is None:
        raise SystemExit(f'the EXAMPLES of {path} have no {EXAMPLE_MODULE} task with host: no decommissioning example')
    finder = tasks[start]
    registered = finder.get('register')
    chosen = [start] + [index for index in range(start + 1, len(tasks))
                        if registered and re.search(rf'\b{re.escape(registered)}\b', str(tasks[index].get('loop', '')))]
    resolver = [tasks[index] for index in chosen[1:]]
    args = finder[EXAMPLE_MODULE]
    if (str(args.get('status', '')).lower() != 'alarm' or not resolver
            or not any(str(task.get('temperstack.alerting.alert', {}).get('status', '')).upper() == 'OK' for task in resolver)):
        raise SystemExit(
            f'the decommissioning example of {path} is no longer "{EXAMPLE_MODULE} host=... status=Alarm, then a loop '
            'of temperstack.alerting.alert status=OK over what it registered": update this test with the documentation'
        )
    lines = [line for index in chosen for line in blocks[index]]
    playbook = '\n'.join([
        '---',
        f'# Generated by day2.py from the EXAMPLES of {os.path.relpath(path, collection_root())}: the decommissioning',
        '# example, line for line. Do not edit; edit the documentation.',
        '- name: Decommission a host, as the documentation of alert_info shows',
        '  hosts: localhost',
        '  gather_facts: false',
        '  tasks:',
        *[('    ' + line) if line else '' for line in lines],
        '',
    ])
    # The copy must mean what the documentation means.
    if yaml.safe_load(playbook)[0]['tasks'] != [tasks[index] for index in chosen]:
        raise SystemExit('the decommissioning example did not survive being copied into a play')
    return playbook, str(args['host'])


def payloads(args: list[str]) -> None:
    acked: dict[str, t.Any] = {}
    stated: dict[str, t.Any] = {}
    for record in stand_in_records(args[0]):
        payload = record['json'] if isinstance(record['json'], dict) else {}
        if 'alert_id' in payload:
            stated[payload['alert_id']] = payload
            if record['delivered']:
                acked[payload['alert_id']] = payload
    with open(args[1], 'w', encoding='utf-8') as handle:
        json.dump({'acked': acked, 'stated': stated}, handle)


def example(args: list[str]) -> None:
    playbook, host = decommission_example()
    with open(args[0], 'w', encoding='utf-8') as handle:
        handle.write(playbook)
    print(host)


COMMANDS = {
    'payloads': payloads,
    'dump': lambda args: print('\n'.join(dump(args[0]))),
    'example': example,
}


if __name__ == '__main__':
    sys.exit(run(COMMANDS, sys.argv))
