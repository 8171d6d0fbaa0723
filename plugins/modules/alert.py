# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The module is implemented by the action plugin of the same name and always runs on the controller;
# this file carries its documentation, as ansible.builtin.debug's does.

from __future__ import annotations

DOCUMENTATION = r"""
module: alert
short_description: Raise or resolve a Temperstack alert, sending it only when that is news
version_added: 1.0.0
description:
  - States that a Temperstack alert is in V(Alarm) or V(OK), through Temperstack's webhook integration.
  - The alert is sent only when Temperstack has not already acknowledged this status and payload for this
    O(alert_id), so re-running a playbook is quiet and reports C(changed) only when something was sent.
    What Temperstack acknowledged is remembered in a local ledger (see O(ledger_path)), because the webhook
    cannot be read back.
  - Runs on the Ansible controller. Nothing is installed on or sent to managed nodes, the task needs no
    C(delegate_to), and in a loop over many hosts each host still gets its own alert.
  - Every option except the connection options is one of the fields of Temperstack's webhook API, under the
    same name. Only these fields are ever sent, unset ones are left out, and every value is sent as a string.
author:
  - Temperstack alerting maintainers (@temperstack)
extends_documentation_fragment:
  - temperstack.alerting.connection
  - temperstack.alerting._attributes
  - temperstack.alerting._attributes.action_group
attributes:
  bypass_host_loop:
    description: Runs once for each host, so per-host alerts work without a loop.
    support: none
  check_mode:
    description:
      - Reports whether the alert would be sent. Sends no request and writes nothing to the ledger.
    support: full
  diff_mode:
    description:
      - Shows the status and payload Temperstack is known to hold (C(before)) and the ones it would hold
        after the task (C(after)).
    support: full
  idempotent:
    description:
      - A second run with the same options sends nothing and reports C(changed=false), unless O(force=true).
    support: full
options:
  alert_name:
    description:
      - A brief description of the alert, such as V(Multiple requests are failing).
    type: str
    required: true
  status:
    description:
      - The status Temperstack should hold for this alert. Accepted in any letter case and always sent as
        V(Alarm) or V(OK).
    type: str
    required: true
    choices: [Alarm, OK]
  alert_priority:
    description:
      - The priority, accepted in any letter case and sent as V(Critical) or V(Medium).
      - Left out of the request when not set, so Temperstack applies its own default.
    type: str
    choices: [Critical, Medium]
  alert_id:
    description:
      - The identifier Temperstack groups an alert's notifications under; an V(OK) resolves the V(Alarm)
        with the same O(alert_id).
      - If not set, a stable identifier is derived from O(alert_name) and O(resource_id), sent, and returned,
        so that repeated runs address the same alert. It looks like V(ansible-disk-full-web01-3f1c2a9b0d4e),
        a readable part, then a hash of both values. Changing O(alert_name) therefore addresses a different
        alert; set O(alert_id) explicitly when the name should be free to change.
    type: str
  description:
    description:
      - Additional details about the alert.
    type: str
  alert_url:
    description:
      - A URL associated with the alert, such as a dashboard. Must be an V(http://) or V(https://) URL.
    type: str
  metric_name:
    description:
      - The name of the related metric.
    type: str
  resource_id:
    description:
      - An identifier of the affected resource, such as V({{ inventory_hostname }}).
    type: str
  resource_name:
    description:
      - The name of the affected resource.
    type: str
  resource_type:
    description:
      - The type of the affected resource, such as V(API) or V(host).
    type: str
  run_book_url:
    description:
      - The URL of the runbook for resolving the issue. Must be an V(http://) or V(https://) URL.
    type: str
  force:
    description:
      - Send the alert even if Temperstack is known to hold the same status and payload already.
      - The task then always reports C(changed).
      - It does not override a silence (M(temperstack.alerting.silence)), which withholds a V(Alarm) all the same.
    type: bool
    default: false
  only_if_raised:
    description:
      - Send an V(OK) only if the ledger holds V(Alarm) for this O(alert_id), that is, only to resolve an alert
        that was raised (an V(Alarm) still waiting to be delivered counts as raised). Otherwise nothing is sent,
        nothing is recorded, and the task reports C(changed=false).
      - Without it, an V(OK) for an alert the ledger has no record of is sent, so that Temperstack surely holds V(OK).
        Set it where a task states V(OK) on every healthy run, such as a scheduled check, so that Temperstack
        hears only of recoveries.
      - Has no effect when O(status=Alarm). O(force=true) does not override it.
    type: bool
    default: false
  failures_before_alarm:
    description:
      - Flap damping. Send V(Alarm) only once this task has stated V(Alarm) for this O(alert_id) this many times in a
        row; V(1) sends it the first time. A single failed probe then pages nobody.
      - The count of statements in a row is kept in the ledger, per endpoint and O(alert_id), so it carries over from
        run to run (and, with O(ledger_url), from controller to controller). Any V(OK) starts it again.
      - O(force=true) sends at once, whatever the count.
      - An V(Alarm) that reaches the count while a silence (M(temperstack.alerting.silence)) covers it is withheld.
    type: int
    default: 1
    version_added: 1.1.0
  successes_before_ok:
    description:
      - Flap damping for recoveries. Send V(OK) only once this task has stated V(OK) for this O(alert_id) this many
        times in a row; V(1) sends it the first time. Counted as for O(failures_before_alarm).
    type: int
    default: 1
    version_added: 1.1.0
notes:
  - The ledger records an alert only after Temperstack answered with HTTP 2xx. A task that fails to deliver
    leaves the ledger as it was, so the next run sends again.
  - The ledger file is per controller. Alerts sent from another controller, or through another tool, are unknown to
    it, so the first run on a new controller (or an AWX/Automation Controller job whose files do not persist)
    sends each alert once, unless the controllers share a ledger through O(ledger_url).
  - While a silence made with M(temperstack.alerting.silence) covers an alert (by O(alert_id), O(resource_id) or the
    inventory host the task runs for), its V(Alarm) is withheld and the result says C(silenced).
  - Forks that decide the same alert at the same moment send it once; distinct alerts go out in parallel.
seealso:
  - name: Temperstack webhook integration
    description: The webhook API this module speaks.
    link: https://docs.temperstack.com/
"""

EXAMPLES = r"""
- name: Raise an alert for each host whose disk is nearly full
  temperstack.alerting.alert:
    webhook_url: "{{ temperstack_webhook_url }}"
    alert_name: Disk almost full
    status: Alarm
    alert_priority: Critical
    resource_id: "{{ inventory_hostname }}"
    resource_type: host
    metric_name: disk_used_percent
    # The threshold, not the measured value: a description that changes on every run would resend the alert.
    description: Raised while /var is more than 90% full
  when: disk_used_percent | int > 90

- name: Resolve it once the disk has room again (sent only if the alert was raised)
  temperstack.alerting.alert:
    webhook_url: "{{ temperstack_webhook_url }}"
    alert_name: Disk almost full
    status: OK
    only_if_raised: true
    resource_id: "{{ inventory_hostname }}"
  when: disk_used_percent | int <= 90

- name: One alert for the whole deployment, sent once rather than per host
  temperstack.alerting.alert:
    api_key: "{{ vault_temperstack_api_key }}"
    org: acme
    alert_id: deploy-web-tier
    alert_name: Web tier deployment in progress
    status: Alarm
    alert_priority: Medium
    run_book_url: https://wiki.example.com/runbooks/web-deploy
  run_once: true

- name: Set the connection once for every Temperstack task in a block (or a play)
  module_defaults:
    group/temperstack.alerting.temperstack:
      api_key: "{{ vault_temperstack_api_key }}"
      org: acme
      timeout: 5
  block:
    - name: Raise the alert
      temperstack.alerting.alert:
        alert_name: Certificate expires soon
        status: Alarm
        resource_id: "{{ inventory_hostname }}"

- name: Raise an alert when a deployment step fails and resolve it when it succeeds
  block:
    - name: Deploy the application
      ansible.builtin.command: /usr/local/bin/deploy --release "{{ release }}"
      changed_when: true

    - name: Resolve the deployment alert
      temperstack.alerting.alert:
        alert_id: "deploy-{{ inventory_hostname }}"
        alert_name: Deployment failed
        status: OK
        resource_id: "{{ inventory_hostname }}"
  rescue:
    - name: Raise the deployment alert
      temperstack.alerting.alert:
        alert_id: "deploy-{{ inventory_hostname }}"
        alert_name: Deployment failed
        status: Alarm
        alert_priority: Critical
        resource_id: "{{ inventory_hostname }}"
        description: "{{ ansible_failed_result.msg | default('deploy failed') }}"

- name: Send again even though Temperstack already has this alert
  temperstack.alerting.alert:
    alert_id: nightly-backup
    alert_name: Nightly backup failed
    status: Alarm
    force: true
"""

RETURN = r"""
alert_id:
  description: The alert's identifier, as given or as derived from O(alert_name) and O(resource_id).
  returned: success
  type: str
  sample: ansible-disk-almost-full-web01-3f1c2a9b0d4e
status:
  description:
    - The status Temperstack holds after the task, V(Alarm) or V(OK).
    - V(OK) also when O(only_if_raised=true) withheld an V(OK), since the alert is then not raised.
  returned: success
  type: str
  sample: Alarm
previous_status:
  description:
    - The status the ledger recorded before the task, or V(null) if it had no record of this alert.
    - An undelivered alert still waiting in the ledger counts as the current status.
  returned: success
  type: str
  sample: OK
sent:
  description: Whether a request was sent and acknowledged by Temperstack. Always V(false) in check mode.
  returned: always
  type: bool
  sample: true
payload:
  description:
    - The request body, exactly as sent (or, when nothing was sent, as it would have been).
  returned: success
  type: dict
  sample:
    alert_name: Disk almost full
    status: Alarm
    alert_priority: Critical
    alert_id: ansible-disk-almost-full-web01-3f1c2a9b0d4e
    resource_id: web01
http_status:
  description: The HTTP status of Temperstack's last answer, or V(null) if no answer was received or no request was sent.
  returned: always
  type: int
  sample: 200
attempts:
  description: How many requests were made; V(0) when nothing was sent.
  returned: always
  type: int
  sample: 1
silenced:
  description:
    - The name of the silence (M(temperstack.alerting.silence)) that withheld this V(Alarm). It is not sent, and is
      sent if this task states it again once the silence has ended.
    - For an V(OK), the silence that had withheld its V(Alarm), which therefore never reached Temperstack; the V(OK)
      is not sent either.
  returned: when a silence withheld the alert
  type: str
  sample: db-maintenance
damped:
  description:
    - How many times in a row this status has been stated, of how many it takes (O(failures_before_alarm),
      O(successes_before_ok)), while that is not yet enough to send it.
  returned: when flap damping held the alert back
  type: str
  sample: 1 of 3
integration:
  description: The integration the alert went to, as O(integration) named it.
  returned: when O(integration) is set
  type: str
  sample: db
  version_added: 1.1.0
"""
