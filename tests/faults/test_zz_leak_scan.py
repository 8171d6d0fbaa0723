# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 5: after every other test of the suite (pytest runs this file last), scan for the integration key.

Every scenario above ran ansible-playbook at -vvvv with the one distinctive key of the session. Scanned: all
their output, every ledger (with its -wal and -shm files), every temporary file (HOME, TMPDIR,
ANSIBLE_LOCAL_TEMP and ANSIBLE_REMOTE_TEMP point into the work directory, and module files are kept), the
stand-ins' request logs, and every request every stand-in recorded. The key may appear in one place only:
the request path Temperstack receives.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import faultlib
from faultlib import SECRET_KEY


def forms(secret: str) -> list[bytes]:
    """The key as text, URL-encoded, JSON-escaped and base64 (at each of the three alignments)."""
    raw = secret.encode()
    found = {raw, quote(secret, safe='').encode(), json.dumps(secret)[1:-1].encode()}
    for shift in range(3):
        encoded = base64.b64encode(b'\0' * shift + raw)[4 if shift else 0:]
        found.add(encoded[:len(raw)])
    return sorted(found)


def test_the_key_is_only_in_the_request_path(work_dir, figures):
    needles = forms(SECRET_KEY)
    files = bytes_scanned = 0
    leaks = []
    for root, _dirs, names in os.walk(work_dir):
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, 'rb') as handle:
                    data = handle.read()
            except OSError:
                continue
            files += 1
            bytes_scanned += len(data)
            if any(needle in data for needle in needles):
                leaks.append(os.path.relpath(path, work_dir))
    outputs = [name for name in os.listdir(os.path.join(work_dir, 'outputs')) if name.endswith('.stdout')]

    requests = with_key_in_path = 0
    misplaced = []
    for record in faultlib.RECORDS:
        requests += 1
        if SECRET_KEY in (record.get('path') or ''):
            with_key_in_path += 1
        rest = dict(record, path=None, key=None)
        if any(needle.decode() in json.dumps(rest, ensure_ascii=False) for needle in needles):
            misplaced.append(record.get('seq'))

    figures.set('leak_scan', 'files', files)
    figures.set('leak_scan', 'bytes', bytes_scanned)
    figures.set('leak_scan', 'ansible_playbook_runs', len(outputs))
    figures.set('leak_scan', 'requests_checked', requests)
    figures.set('leak_scan', 'requests_with_the_key_in_the_path', with_key_in_path)
    figures.set('leak_scan', 'files_with_the_key', leaks)
    figures.set('leak_scan', 'requests_with_the_key_elsewhere', len(misplaced))
    # Not vacuous: runs were made at -vvvv, and the key did reach Temperstack, in the path.
    assert outputs, 'no ansible-playbook run to scan (run the whole suite)'
    assert with_key_in_path > 0
    with open(os.path.join(work_dir, 'outputs', sorted(outputs)[0]), encoding='utf-8', errors='replace') as handle:
        assert 'ansible-playbook [core' in handle.read()
    assert not leaks, f'the key is in: {leaks}'
    assert not misplaced, f'the key is in the body or headers of requests {misplaced}'
