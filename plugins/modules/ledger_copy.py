# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The module is implemented by the action plugin of the same name and always runs on the controller;
# this file carries its documentation, as ansible.builtin.debug's does.

from __future__ import annotations

DOCUMENTATION = r"""
module: ledger_copy
short_description: Copy the alert ledger of a controller into a fleet's, or carry alerts over a key rotation
version_added: 1.1.0
description:
  - Copies what one ledger remembers, the alerts Temperstack acknowledged and the alerts still waiting in the
    outbox, into another. Its main use is moving a controller to the PostgreSQL ledger of a fleet
    (O(ledger_url)), so that the Alarms it raised are still resolved by OKs sent from any controller or AWX job.
  - An alert the target already knows as recently or more recently is left as the target has it. So running the
    task twice copies nothing the second time, and copying an old ledger never undoes what the fleet has sent
    since, nor puts an Alarm behind its own OK.
  - The source is only read. Endpoints travel as the one-way hashes the ledgers store; no key is needed or shown.
  - After a rotation of Temperstack's integration key, O(from_webhook_url) (or O(from_api_key)) names the old
    endpoint. Then, within one ledger, the alerts open under the old key and the entries queued for it are moved
    to the new endpoint, which the connection options name as for M(temperstack.alerting.alert). Its OKs then
    resolve the Alarms raised under the old key, provided Temperstack keeps those alerts across the rotation (one
    integration, a new key). Neither key is ever shown.
  - Runs on the Ansible controller. Run it once, with C(run_once=true) or against C(localhost).
author:
  - Temperstack alerting maintainers (@temperstack)
extends_documentation_fragment:
  - temperstack.alerting._attributes
attributes:
  check_mode:
    description: Reports what would be copied, and writes to neither ledger.
    support: full
  diff_mode:
    description: Lists the alert ids that are (or would be) copied.
    support: full
  idempotent:
    description: A second run copies nothing and reports C(changed=false).
    support: full
options:
  from_ledger_path:
    description:
      - The SQLite ledger file to copy from.
      - If neither this nor O(from_ledger_url) is set, the controller's own ledger is copied, the file named by the
        E(TEMPERSTACK_LEDGER_PATH) environment variable or else V(~/.ansible/temperstack/ledger.sqlite3).
      - A file that does not exist is an error, not an empty ledger.
    type: path
  from_ledger_url:
    description:
      - The PostgreSQL ledger to copy from, as a libpq connection URI, for example to leave a fleet's ledger for a
        controller's own file. Never shown; its password is masked in every message.
      - Mutually exclusive with O(from_ledger_path).
    type: str
  ledger_url:
    description:
      - The PostgreSQL ledger to copy into, as a libpq connection URI,
        V(postgresql://user[:password]@host[:port]/dbname[?sslmode=verify-full]). Its schema is created on first
        use, as the M(temperstack.alerting.alert) module does. Never shown; its password is masked in every message.
      - If not set, the value of the E(TEMPERSTACK_LEDGER_URL) environment variable is used.
      - If that is not set either, O(ledger_path) is the target.
    type: str
  ledger_path:
    description:
      - The SQLite ledger file to copy into, when O(ledger_url) is not set. It is created if missing.
    type: path
  from_webhook_url:
    description:
      - Key rotation. The integration URL with the OLD key; the alerts recorded for it, and the entries queued for
        it, move to the endpoint of O(webhook_url) (or O(api_key) with O(org) or O(base_url), or their
        E(TEMPERSTACK_*) environment variables), within the ledger of O(ledger_url) or O(ledger_path).
      - Mutually exclusive with O(from_api_key), O(from_ledger_path) and O(from_ledger_url).
    type: str
  from_api_key:
    description:
      - Key rotation, as O(from_webhook_url), for the old key alone; the organisation or base URL is the new one's.
    type: str
  webhook_url:
    description:
      - With O(from_webhook_url) or O(from_api_key), the integration URL with the NEW key. If not set, the value of the
        E(TEMPERSTACK_WEBHOOK_URL) environment variable is used (or O(api_key) and the rest, as for the alert module).
    type: str
  api_key:
    description: With O(from_webhook_url) or O(from_api_key), the new key, used with O(org) or O(base_url).
    type: str
  org:
    description: The Temperstack organisation of O(api_key) (and of O(from_api_key)).
    type: str
  base_url:
    description: The base URL of O(api_key) (and of O(from_api_key)), instead of O(org).
    type: str
notes:
  - Not in the action group C(temperstack.alerting.temperstack), whose C(module_defaults) set connection options
    this module does not take. Set its O(ledger_url) with E(TEMPERSTACK_LEDGER_URL), or in C(module_defaults) for
    this module by its name.
  - The target must not be the source, except for a key rotation, which moves alerts within one ledger.
  - Needs the Python package C(psycopg) (version 3) on the controller when either ledger is a PostgreSQL one.
seealso:
  - module: temperstack.alerting.alert
  - name: The fleet guide
    description: Setting up the shared PostgreSQL ledger, for AWX and for many controllers.
    link: https://github.com/temperstack/ansible-collection-alerting/blob/main/docs/fleet.md
"""

EXAMPLES = r"""
- name: Move this controller's ledger into the fleet's shared ledger
  temperstack.alerting.ledger_copy:
    ledger_url: "{{ lookup('ansible.builtin.env', 'TEMPERSTACK_LEDGER_URL') }}"
  run_once: true

- name: See first what would be copied
  temperstack.alerting.ledger_copy:
    from_ledger_path: /var/lib/ansible/temperstack/ledger.sqlite3
    ledger_url: postgresql://temperstack@db.example.com/ansible?sslmode=verify-full
  check_mode: true
  diff: true
  run_once: true
  register: planned

- name: After rotating the integration key, carry the open alerts to the new key
  temperstack.alerting.ledger_copy:
    from_webhook_url: "{{ vault_old_temperstack_webhook_url }}"
    webhook_url: "{{ vault_temperstack_webhook_url }}"
  run_once: true

- name: Leave the fleet, taking its ledger along into a local file
  temperstack.alerting.ledger_copy:
    from_ledger_url: "{{ fleet_ledger_url }}"
    ledger_path: ~/.ansible/temperstack/ledger.sqlite3
  run_once: true
"""

RETURN = r"""
records:
  description: How many acknowledged alerts were copied (in check mode, would be).
  returned: success
  type: int
  sample: 42
entries:
  description: How many alerts waiting in the outbox were copied (in check mode, would be). They are delivered by the next task or run that uses the target.
  returned: success
  type: int
  sample: 1
alert_ids:
  description: The ids of the alerts copied (in check mode, that would be), sorted.
  returned: success
  type: list
  elements: str
  sample: [ansible-site-deploy-3f1c2a9b0d4e]
source:
  description: The ledger copied from, as a path or a URL with its password masked.
  returned: success
  type: str
  sample: /home/deploy/.ansible/temperstack/ledger.sqlite3
target:
  description: The ledger copied into, as a path or a URL with its password masked.
  returned: success
  type: str
  sample: postgresql://temperstack:********@db.example.com/ansible
"""
