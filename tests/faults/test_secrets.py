# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 5 (with test_zz_leak_scan.py): URL credentials in task errors are masked before they reach an alert,
and the ledger keeps 0600 in 0700 directories under a permissive umask. Real ansible-playbook runs at -vvvv."""

from __future__ import annotations

import os
import stat

from faultlib import SECRET_KEY, assert_clean, callback_env, ledger_rows

CREDENTIAL_PLAYBOOK = """\
- name: Fetch sources
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Clone https://deploy:TASKNAME-PW-51@git.example.com/app.git
      ansible.builtin.fail:
        msg: >-
          fatal: could not read from https://deploy:HUNTER2-PW-77@git.example.com/app.git;
          mirror ftp://mirror:FTP-PW-13@ftp.example.com/pub failed too;
          and POST https://other.temperstack.com/api/integration/webhook/OTHERKEY-88 said 500
"""
SECRETS = ('TASKNAME-PW-51', 'HUNTER2-PW-77', 'FTP-PW-13', 'OTHERKEY-88')

UMASK_PLAYBOOK = """\
- name: Under umask 000
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Raise an alert with the module
      temperstack.alerting.alert:
        alert_name: Disk almost full
        status: Alarm
    - name: Fail, so that the callback raises one too
      ansible.builtin.fail:
        msg: broken
"""


def test_url_credentials_in_task_errors_are_masked(harness, server, work_dir, figures):
    directory = os.path.join(work_dir, 'credentials')
    playbook = harness.write(directory, 'fetch.yml', CREDENTIAL_PLAYBOOK)
    server.reset()
    run = harness.playbook(playbook, env=callback_env(server.url, os.path.join(directory, 'ledger', 'ledger.sqlite3')))
    assert_clean(run)
    assert run.rc == 2
    [record] = [r for r in server.requests() if r['delivered']]
    description = record['json']['description']
    for secret in SECRETS:
        assert secret in run.stdout  # -vvvv shows them in Ansible's own output: the test is not vacuous
        assert secret not in record['body'], f'{secret} reached Temperstack'
    assert 'https://********@git.example.com/app.git' in description
    assert 'ftp://********@ftp.example.com/pub' in description
    assert '/api/integration/webhook/********' in description
    figures.set('secrets', 'url_credentials_masked', len(SECRETS))
    figures.set('secrets', 'masked_description', description)


def mode(path: str) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))[2:]


def test_umask_000_keeps_the_ledger_private(harness, server, work_dir, figures):
    directory = os.path.join(work_dir, 'umask')
    playbook = harness.write(directory, 'umask.yml', UMASK_PLAYBOOK)
    top = os.path.join(directory, 'made-by-the-collection')
    ledger = os.path.join(top, 'deeper', 'ledger.sqlite3')
    env = dict(callback_env(server.url, ledger), TEMPERSTACK_API_KEY=SECRET_KEY)
    server.reset()
    run = harness.playbook(playbook, env=env, umask=0o000)
    assert_clean(run)
    assert run.rc == 2
    assert len(server.delivered()) == 2
    modes = {os.path.relpath(path, directory): mode(path) for path in (top, os.path.dirname(ledger), ledger)}
    for suffix in ('-wal', '-shm'):
        if os.path.exists(ledger + suffix):
            modes[os.path.relpath(ledger + suffix, directory)] = mode(ledger + suffix)
    # A ledger someone left world-readable is made private again by the next run.
    os.chmod(ledger, 0o666)
    again = harness.playbook(playbook, env=env, umask=0o000)
    assert again.rc == 2
    modes['ledger.sqlite3 after a chmod 666 and another run'] = mode(ledger)
    assert ledger_rows(ledger)['integrity'] == [('ok',)]
    figures.set('secrets', 'modes_under_umask_000', modes)
    for name, bits in modes.items():
        expected = '700' if name in ('made-by-the-collection', 'made-by-the-collection/deeper') else '600'
        assert bits == expected, f'{name} has mode {bits} under umask 000, expected {expected}'
