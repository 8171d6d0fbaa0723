# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The module is implemented by the action plugin of the same name and always runs on the controller;
# this file carries its documentation, as ansible.builtin.debug's does.

from __future__ import annotations

DOCUMENTATION = r"""
module: silence
short_description: Keep planned maintenance from paging anyone, with a silence in the alert ledger
version_added: 1.1.0
description:
  - Creates, updates or removes a silence, a maintenance window. While a silence is active, the Alarms of the
    alerts it covers are withheld by the M(temperstack.alerting.alert) module, the
    P(temperstack.alerting.playbook_alerts#callback) callback and the C(temperstack.alerting.health_checks) role.
    They are not sent and not counted as sent; the module reports C(silenced) with the silence's name, and the
    callback's summary line says how many were withheld by which silence.
  - A withheld Alarm is remembered as the alert's last stated status. After the silence has ended, the next decision
    about that alert sends its Alarm if it is still stated. An OK for an alert whose Alarm was withheld and never
    sent sends nothing, since Temperstack never heard of it.
  - Only Alarms are withheld. An OK is sent as usual, so an alert raised before the maintenance still resolves.
  - Silences live in the ledger, beside what Temperstack acknowledged, so with O(ledger_url) one silence covers every
    controller and AWX job of the fleet. They apply to every Temperstack endpoint (integration key) in that ledger.
    Silences that have ended are pruned.
  - Runs on the Ansible controller. Use C(run_once=true).
author:
  - Temperstack alerting maintainers (@temperstack)
extends_documentation_fragment:
  - temperstack.alerting._attributes
attributes:
  check_mode:
    description: Reports what would change and which alerts the silence would cover, and writes nothing.
    support: full
  diff_mode:
    description: Shows the silence before and after.
    support: full
  idempotent:
    description:
      - Stating the same silence again changes nothing. A silence given only a O(duration) keeps the window it got
        when it was created, for as long as it runs.
    support: full
options:
  name:
    description:
      - The silence's name, unique in the ledger. Stating a silence with an existing name replaces it.
      - With O(state=absent), a glob pattern such as V(maint-*) removes every silence it matches; a pattern that
        matches none is an error. A plain name that does not exist is not an error (nothing to remove).
    type: str
    required: true
  state:
    description: Whether the silence should exist.
    type: str
    choices: [present, absent]
    default: present
  alert_id:
    description:
      - Glob patterns (C(fnmatch), case-sensitive) that an alert's id must match, such as V(ansible-site-yml-*) for the
        callback's alerts of C(site.yml).
    type: list
    elements: str
  resource_id:
    description:
      - Glob patterns that an alert's C(resource_id) must match, such as V(db-*).
    type: list
    elements: str
  hosts:
    description:
      - Glob patterns of inventory host names. They match the host a module task runs for, and the hosts named in a
        callback's Alarm (its failed hosts).
    type: list
    elements: str
  starts:
    description:
      - When the silence begins, in ISO 8601, such as V(2026-12-01T22:00:00+01:00); without an offset, the
        controller's local time.
      - Defaults to now.
    type: str
  ends:
    description:
      - When the silence ends, in ISO 8601. Must be after O(starts), and in the future.
      - Mutually exclusive with O(duration); one of them is required with O(state=present).
    type: str
  duration:
    description:
      - How long the silence lasts from O(starts), such as V(2h), V(1h30m), V(45m), V(1d) or V(PT2H). At most 366 days.
    type: str
  comment:
    description: Why, and who to ask; shown by M(temperstack.alerting.alert_info).
    type: str
  ledger_path:
    description:
      - The ledger file that keeps the silence, when O(ledger_url) is not set; the same default as the
        M(temperstack.alerting.alert) module's, E(TEMPERSTACK_LEDGER_PATH) or V(~/.ansible/temperstack/ledger.sqlite3).
    type: path
  ledger_url:
    description:
      - The shared PostgreSQL ledger that keeps the silence, as for the M(temperstack.alerting.alert) module. Never
        shown; its password is masked in every message.
      - If not set, the value of the E(TEMPERSTACK_LEDGER_URL) environment variable is used.
    type: str
notes:
  - Not in the action group C(temperstack.alerting.temperstack), whose C(module_defaults) set connection options
    this module does not take. Set its O(ledger_url) with E(TEMPERSTACK_LEDGER_URL), or in C(module_defaults) for
    this module by its name.
  - With O(state=present), at least one of O(alert_id), O(resource_id) and O(hosts) is required. An alert is covered
    when it matches every one of them that is given (any of its patterns).
  - Flap damping (O(temperstack.alerting.alert#module:failures_before_alarm)) counts first; an Alarm that reaches its
    count while a silence covers it is withheld.
seealso:
  - module: temperstack.alerting.alert_info
  - module: temperstack.alerting.alert
"""

EXAMPLES = r"""
- name: Tonight's database maintenance pages nobody
  temperstack.alerting.silence:
    name: db-maintenance-2026-12-01
    resource_id: [db-*]
    starts: "2026-12-01T22:00:00+01:00"
    ends: "2026-12-02T02:00:00+01:00"
    comment: Planned PostgreSQL upgrade, ask @dba-oncall
  run_once: true

- name: Silence the hosts this play is about to reboot, for an hour
  temperstack.alerting.silence:
    name: "reboot-{{ ansible_play_batch | join('-') }}"
    hosts: "{{ ansible_play_batch }}"
    duration: 1h
  run_once: true

- name: Maintenance done, end it early
  temperstack.alerting.silence:
    name: db-maintenance-2026-12-01
    state: absent
  run_once: true

- name: Remove every maintenance silence
  temperstack.alerting.silence:
    name: "db-maintenance-*"
    state: absent
  run_once: true
"""

RETURN = r"""
silence:
  description: The silence as stored (with O(state=present)).
  returned: success and O(state=present)
  type: dict
  contains:
    name:
      description: Its name.
      type: str
      sample: db-maintenance-2026-12-01
    alert_id:
      description: Its alert id patterns.
      type: list
      elements: str
      sample: []
    resource_id:
      description: Its resource id patterns.
      type: list
      elements: str
      sample: [db-*]
    hosts:
      description: Its host patterns.
      type: list
      elements: str
      sample: []
    starts:
      description: When it begins, ISO 8601 in UTC.
      type: str
      sample: "2026-12-01T21:00:00+00:00"
    ends:
      description: When it ends, ISO 8601 in UTC.
      type: str
      sample: "2026-12-02T01:00:00+00:00"
    comment:
      description: Its comment.
      type: str
      sample: Planned PostgreSQL upgrade, ask @dba-oncall
    active:
      description: Whether it withholds Alarms now (it has begun and not ended).
      type: bool
      sample: false
removed:
  description: The names of the silences removed (in check mode, that would be).
  returned: success and O(state=absent)
  type: list
  elements: str
  sample: [db-maintenance-2026-12-01]
matches:
  description:
    - The ids of the alerts the ledger knows (acknowledged, queued or withheld) that the silence covers, or, with
      O(state=absent), that the removed silences covered. Alerts the ledger has not seen yet are covered too, once
      they come.
  returned: success
  type: list
  elements: str
  sample: [db-01-disk-3f1c2a9b0d4e]
"""
