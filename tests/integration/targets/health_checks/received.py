# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Print what the Temperstack stand-in at URL received since its last reset (standard library only).

    received.py URL      one line per webhook request, sorted:
                         "STATUS|RESOURCE_ID|ALERT_NAME|ALERT_PRIORITY|RESOURCE_TYPE|RESOURCE_NAME|RUN_BOOK_URL|DESCRIPTION"
                         (a field the request left out is shown as "-")
                         (STATUS is the alert's status; a request the stand-in did not answer with
                         200 is marked "UNDELIVERED:STATUS")

Hosts run in parallel, so the order of their requests is not part of what the tests expect; the lines
are therefore sorted.
"""

from __future__ import annotations

import json
import sys
import urllib.request


def main(argv: list[str]) -> int:
    with urllib.request.urlopen(argv[1].rstrip('/') + '/_stand_in/requests', timeout=10) as response:
        records = json.loads(response.read().decode('utf-8'))
    lines = []
    for record in records:
        payload = record.get('json') or {}
        status = payload.get('status', '?')
        if not record.get('delivered'):
            status = f'UNDELIVERED:{status}'
        fields = ('resource_id', 'alert_name', 'alert_priority', 'resource_type', 'resource_name', 'run_book_url', 'description')
        lines.append('|'.join([status] + [payload.get(field, '-') for field in fields]))
    for line in sorted(lines):
        print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
