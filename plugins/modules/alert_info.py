# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The module is implemented by the action plugin of the same name and always runs on the controller;
# this file carries its documentation, as ansible.builtin.debug's does.

from __future__ import annotations

DOCUMENTATION = r"""
module: alert_info
short_description: See which Temperstack alerts Ansible holds open, what waits in the outbox, and the silences
version_added: 1.1.0
description:
  - Reads the alert ledger, the collection's memory of what Temperstack acknowledged, and returns, for one Temperstack
    endpoint, its alerts, the alerts still waiting in its outbox, and the silences
    (M(temperstack.alerting.silence)).
  - Answers the questions of an operator, such as which alerts are open, what is stuck in the outbox, and what a
    decommissioned host still has open, without opening the ledger by hand.
  - Read-only, in check mode too. The endpoint is picked by the connection options, as for the
    M(temperstack.alerting.alert) module; entries queued for other endpoints (such as one whose key was rotated)
    are only counted, and named by a hash, never by their key.
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
    description: Runs as usual; it changes nothing either way.
    support: full
  diff_mode:
    description: Changes nothing, so has no diff.
    support: none
  idempotent:
    description: Reads only.
    support: full
options:
  alert_id:
    description: Only alerts whose id matches one of these glob patterns (C(fnmatch), case-sensitive).
    type: list
    elements: str
  status:
    description:
      - Only alerts in this status, V(Alarm) or V(OK) (in any letter case), or V(any).
      - The status is the last one stated for the alert. That is Temperstack's, or a newer one still queued, or an
        V(Alarm) a silence withheld.
    type: str
    default: any
  resource_id:
    description: Only alerts whose C(resource_id) matches one of these glob patterns.
    type: list
    elements: str
  host:
    description:
      - Only alerts about this inventory host. That is, the host is among the alert's hosts (the failed hosts of a
        callback Alarm, the host a module task ran for), or the alert's C(resource_id) is the host's name.
    type: str
  queued_only:
    description: Only alerts with an entry waiting in the outbox.
    type: bool
    default: false
notes:
  - O(timeout), O(retries), O(validate_certs) and O(ca_path) are accepted, so that C(module_defaults) for the action
    group can set them for every module of the group, and not used, since this module sends nothing.
seealso:
  - module: temperstack.alerting.alert
  - module: temperstack.alerting.silence
"""

EXAMPLES = r"""
- name: Which alerts are open right now?
  temperstack.alerting.alert_info:
    status: Alarm
  run_once: true
  register: open_alerts

- name: What is stuck in the outbox, and for how long?
  temperstack.alerting.alert_info:
    queued_only: true
  run_once: true
  register: stuck

- name: Show it
  ansible.builtin.debug:
    msg: "{{ item.alert_id }}: {{ item.status }} queued {{ item.age }} s ago, {{ item.failed_deliveries }} failed deliveries"
  loop: "{{ stuck.queued }}"
  loop_control:
    label: "{{ item.alert_id }}"
  run_once: true

# Decommissioning a host: resolve every alert it still has open, then forget it.
- name: Find the open alerts of the host
  temperstack.alerting.alert_info:
    host: web03
    status: Alarm
  run_once: true
  register: web03_alerts

- name: Resolve each of them
  temperstack.alerting.alert:
    alert_id: "{{ item.alert_id }}"
    alert_name: "{{ item.fields.alert_name }}"
    status: OK
  loop: "{{ web03_alerts.alerts }}"
  loop_control:
    label: "{{ item.alert_id }}"
  run_once: true
"""

RETURN = r"""
alerts:
  description: The alerts of the endpoint that pass the filters, by alert id.
  returned: success
  type: list
  elements: dict
  contains:
    alert_id:
      description: The alert's id.
      type: str
      sample: ansible-site-yml-deploy-web-tier-3f1c2a9b0d4e
    status:
      description: The status Temperstack acknowledged, or V(null) if it has acknowledged none yet (only queued or withheld).
      type: str
      sample: Alarm
    fields:
      description:
        - The fields Temperstack acknowledged (the webhook payload), or, for an alert it has not acknowledged yet,
          the fields last stated for it.
      type: dict
      sample: {alert_id: ansible-site-yml-deploy-web-tier-3f1c2a9b0d4e, alert_name: "Ansible play 'Deploy web tier' failed (site.yml)", status: Alarm}
    hosts:
      description: The inventory hosts the alert is about.
      type: list
      elements: str
      sample: [web03]
    changed:
      description: When Temperstack acknowledged its status, ISO 8601 in UTC; V(null) if it has acknowledged none.
      type: str
      sample: "2026-11-29T21:40:25+00:00"
    queued:
      description: Whether a newer entry for it waits in the outbox (see RV(queued)).
      type: bool
      sample: false
    withheld_by:
      description: The silence that withheld its last stated status, an V(Alarm) not sent; V(null) if none did.
      type: str
      sample: db-maintenance-2026-12-01
    withheld_status:
      description: The status that silence withheld (V(Alarm)), or V(null).
      type: str
      sample: null
    integration:
      description:
        - The integration whose endpoint holds the alert, by name (V(default) for the connection options' endpoint,
          the lower-cased C(<NAME>) of E(TEMPERSTACK_WEBHOOK_URL_<NAME>) otherwise, or the name given in
          O(integration)); never its URL or key.
      type: str
      sample: db
      version_added: 1.1.0
queued:
  description: The entries of the endpoint's outbox that pass the filters, oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    alert_id:
      description: The alert's id.
      type: str
      sample: ansible-site-yml-deploy-web-tier-3f1c2a9b0d4e
    status:
      description: The status it will send.
      type: str
      sample: OK
    fields:
      description: The fields it will send.
      type: dict
      sample: {}
    queued:
      description: When it was queued, ISO 8601 in UTC.
      type: str
      sample: "2026-11-29T21:40:25+00:00"
    age:
      description: Seconds since it was queued.
      type: float
      sample: 3600.5
    failed_deliveries:
      description:
        - How many times delivering it has failed. Each delivery makes up to C(retries) + 1 HTTP requests (the
          C(retries) of the task or callback that tried it), which the C(after N attempts) of a delivery error counts.
      type: int
      sample: 2
    held:
      description: Whether a playbook run still holds it (a failure its unit has not finished deciding), so it is not sent yet.
      type: bool
      sample: false
    integration:
      description: The integration whose outbox holds it, by name, as in RV(alerts[].integration).
      type: str
      sample: db
      version_added: 1.1.0
queued_elsewhere:
  description: How many outbox entries wait for other endpoints, such as the old key after a key rotation.
  returned: success
  type: int
  sample: 0
other_endpoints:
  description: Those other endpoints, each named by the start of its hash (never its key), with how many entries wait for it.
  returned: success
  type: list
  elements: dict
  contains:
    endpoint:
      description: The start of the endpoint's hash, as M(temperstack.alerting.outbox) takes it in its C(other_endpoint) option.
      type: str
      sample: sha256:9f2c1e07a4b3
    queued:
      description: How many entries wait for it.
      type: int
      sample: 2
silences:
  description: Every silence in the ledger (those that ended are pruned), as M(temperstack.alerting.silence) returns them.
  returned: success
  type: list
  elements: dict
  sample:
    - name: db-maintenance
      alert_id: []
      resource_id: [db-*]
      hosts: []
      starts: "2026-12-01T21:00:00+00:00"
      ends: "2026-12-02T01:00:00+00:00"
      comment: ""
      active: false
ledger:
  description: The ledger read, as a path or a URL with its password masked.
  returned: success
  type: str
  sample: /home/deploy/.ansible/temperstack/ledger.sqlite3
"""
