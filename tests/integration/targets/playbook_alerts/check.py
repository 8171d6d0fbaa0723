# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What reached the Temperstack stand-in, in forms runme.sh can compare (standard library only).

    check.py URL count                 how many webhook requests were recorded
    check.py URL lines FROM            one line per request after the first FROM: "CODE STATUS ALERT_ID"
                                       (CODE is the HTTP status answered, or HANG / DROP)
    check.py URL field INDEX NAME      a payload field of request INDEX (1-based; -1 is the last)
    check.py URL grep-bodies TEXT      the requests (as "SEQ") whose body contains TEXT, one per line
    check.py URL keys                  the integration key of every request, one per line
    check.py - no-timestamps TEXT      fail if TEXT holds anything that looks like a time or a date
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request


def records(base: str) -> list[dict]:
    with urllib.request.urlopen(base.rstrip('/') + '/_stand_in/requests', timeout=10) as response:
        return json.loads(response.read().decode('utf-8'))


def main(argv: list[str]) -> int:
    base, command, args = argv[1], argv[2], argv[3:]
    if command == 'count':
        print(len(records(base)))
    elif command == 'lines':
        for record in records(base)[int(args[0]):]:
            code = record['response_status'] if record['outcome'] == 'response' else record['outcome'].upper()
            payload = record['json'] or {}
            print(f"{code} {payload.get('status', '-')} {payload.get('alert_id', '-')}")
    elif command == 'field':
        index = int(args[0])
        all_records = records(base)
        record = all_records[index - 1 if index > 0 else index]
        value = (record['json'] or {}).get(args[1])
        if value is None:
            print(f'request {index} has no field {args[1]}', file=sys.stderr)
            return 1
        print(value)
    elif command == 'grep-bodies':
        for record in records(base):
            if args[0] in (record['body'] or ''):
                print(record['seq'])
    elif command == 'keys':
        for record in records(base):
            print(record['key'])
    elif command == 'no-timestamps':
        found = re.findall(r'\d{1,2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}|\b1[6-9]\d{8}\b', args[0])
        if found:
            print(f'looks like a timestamp: {found}', file=sys.stderr)
            return 1
    else:
        print(f'unknown command {command!r}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
