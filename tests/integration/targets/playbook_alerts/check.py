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

import os
import re
import sys
import typing as t

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'setup_temperstack_stand_in'))
# pylint: disable-next=wrong-import-position
from ts_helpers import request_lines, run, stand_in_records


def field(base: str, args: list[str]) -> int:
    index = int(args[0])
    record = stand_in_records(base)[index - 1 if index > 0 else index]
    value = (record['json'] or {}).get(args[1])
    if value is None:
        print(f'request {index} has no field {args[1]}', file=sys.stderr)
        return 1
    print(value)
    return 0


def no_timestamps(text: str) -> int:
    found = re.findall(r'\d{1,2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}|\b1[6-9]\d{8}\b', text)
    if found:
        print(f'looks like a timestamp: {found}', file=sys.stderr)
        return 1
    return 0


def print_lines(items: t.Iterable[t.Any]) -> None:
    for item in items:
        print(item)


def main(argv: list[str]) -> int:
    base = argv[1]
    commands = {
        'count': lambda args: print(len(stand_in_records(base))),
        'lines': lambda args: print_lines(request_lines(base, int(args[0]))),
        'field': lambda args: field(base, args),
        'grep-bodies': lambda args: print_lines(record['seq'] for record in stand_in_records(base)
                                                if args[0] in (record['body'] or '')),
        'keys': lambda args: print_lines(record['key'] for record in stand_in_records(base)),
        'no-timestamps': lambda args: no_timestamps(args[0]),
    }
    return run(commands, argv[1:])


if __name__ == '__main__':
    sys.exit(main(sys.argv))
