# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The module is implemented by the action plugin of the same name and always runs on the controller;
# this file carries its documentation, as ansible.builtin.debug's does.

from __future__ import annotations

DOCUMENTATION = r"""
module: outbox
short_description: Discard alerts stuck in the outbox of the alert ledger
version_added: 1.1.0
description:
  - Alerts that could not be delivered wait in the ledger's outbox, and every later run with the same endpoint
    sends them first, oldest first. This module discards the ones that should never go out, such as an Alarm queued
    for a host that has since been decommissioned, or entries left for an integration key that was rotated.
  - A discarded entry is gone for good. Temperstack never receives it, and the ledger keeps what Temperstack last
    acknowledged for that alert. To deliver the outbox instead, run any task or playbook with the callback while
    Temperstack is reachable. To see it first, use M(temperstack.alerting.alert_info) with O(temperstack.alerting.alert_info#module:queued_only=true).
  - Entries that a running playbook still holds, and entries being delivered at this moment, are left alone.
  - Runs on the Ansible controller. Use C(run_once=true).
author:
  - Temperstack alerting maintainers (@temperstack)
extends_documentation_fragment:
  - temperstack.alerting.connection.not_sending
  - temperstack.alerting.connection
  - temperstack.alerting._attributes
  - temperstack.alerting._attributes.action_group
attributes:
  check_mode:
    description: Lists what would be discarded, and discards nothing.
    support: full
  diff_mode:
    description: Lists the entries discarded (or that would be).
    support: full
  idempotent:
    description: A second run finds nothing more to discard.
    support: full
options:
  state:
    description: V(absent) discards the entries that the other options select.
    type: str
    choices: [absent]
    default: absent
  alert_id:
    description: Only entries whose alert id matches one of these glob patterns (C(fnmatch), case-sensitive).
    type: list
    elements: str
  older_than:
    description: Only entries queued at least this long ago, such as V(7d), V(12h) or V(PT30M).
    type: str
  other_endpoint:
    description:
      - Discard the entries of another endpoint, such as the old key after a rotation, instead of those of the
        endpoint the connection options name. Give it as M(temperstack.alerting.alert_info) lists it in
        RV(temperstack.alerting.alert_info#module:other_endpoints[].endpoint), such as V(sha256:9f2c1e07a4b3), which
        is the start of the endpoint's hash, never its key.
      - Before discarding them, consider moving them to the new key with M(temperstack.alerting.ledger_copy).
    type: str
notes:
  - At least one of O(alert_id), O(older_than) and O(other_endpoint) is required, so that a bare task never
    empties the outbox.
  - O(timeout), O(retries), O(validate_certs) and O(ca_path) are accepted for C(module_defaults) and not used;
    nothing is sent.
seealso:
  - module: temperstack.alerting.alert_info
  - module: temperstack.alerting.ledger_copy
"""

EXAMPLES = r"""
- name: Discard what is still queued for the decommissioned host web03
  temperstack.alerting.outbox:
    alert_id: ["*-web03-*"]
  run_once: true

- name: Discard entries that have waited over a week
  temperstack.alerting.outbox:
    older_than: 7d
  run_once: true

- name: See which other endpoints still have queued alerts
  temperstack.alerting.alert_info:
  run_once: true
  register: ledger_state

- name: After a key rotation and ledger_copy, discard what is left for the old key
  temperstack.alerting.outbox:
    other_endpoint: "{{ item.endpoint }}"
  loop: "{{ ledger_state.other_endpoints }}"
  run_once: true
"""

RETURN = r"""
discarded:
  description: The entries discarded (in check mode, that would be), oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    alert_id:
      description: The alert's id.
      type: str
      sample: ansible-disk-full-web03-3f1c2a9b0d4e
    status:
      description: The status it would have sent.
      type: str
      sample: Alarm
    queued:
      description: When it was queued, ISO 8601 in UTC.
      type: str
      sample: "2026-11-29T21:40:25+00:00"
    failed_deliveries:
      description:
        - How many times delivering it had failed. Each delivery makes up to C(retries) + 1 HTTP requests (the
          C(retries) of the task or callback that tried it), which the C(after N attempts) of a delivery error counts.
      type: int
      sample: 3
busy:
  description: How many selected entries were left because a sender was delivering their alert at that moment.
  returned: success
  type: int
  sample: 0
"""
