# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Event filter temperstack.alerting.normalize: a Temperstack alert as ``event.temperstack``, its hosts as ``meta.hosts``."""

from __future__ import annotations

import logging
import pathlib
import sys
import typing as t

DOCUMENTATION = r"""
---
short_description: Turn a Temperstack alert into event.temperstack, and its hosts into meta.hosts
description:
  - An ansible-rulebook event filter. It works behind any source that delivers a Temperstack alert,
    C(eda.builtin.webhook), C(ansible.eda.webhook), AAP Event Streams (events with C(payload) and C(meta)),
    and the collection's own C(temperstack.alerting.webhook) (which applies it itself).
  - Adds C(event.temperstack) with the eleven field names of Temperstack's webhook (C(alert_name), C(status),
    C(alert_priority), C(alert_id), C(description), C(alert_url), C(metric_name), C(resource_id), C(resource_name),
    C(resource_type), C(run_book_url)), all as text. C(status) becomes C(Alarm) or C(OK) in any letter case.
    Without C(alert_id), it is derived from C(alert_name) and C(resource_id) as the alert module derives it.
  - Sets C(meta.hosts), so that C(run_playbook) and C(run_job_template) run on the hosts of the alert.
  - Never drops an event. An event with neither C(alert_id) nor C(alert_name) passes through untouched, and
    an alert whose hosts cannot be told passes through without C(meta.hosts); both with a warning in the log.
options:
  field_map:
    description:
      - Where each field is in the payload, as a dotted path (C(alert.labels.name), C(items.0.id)).
      - Fields not named here are read from the payload's top level under their own names.
    type: dict
    default: {}
  hosts_from:
    description:
      - C(ledger) the hosts of the alert's open Alarm, as the collection's ledger knows them (the callback
        records the hosts that failed).
      - C(resource_id) the alert's C(resource_id) as the one host.
      - C(none) leave C(meta.hosts) alone.
    type: str
    choices: [ledger, resource_id, none]
    default: ledger
  ledger_path:
    description: The ledger file, as the alert module's C(ledger_path). Default C(TEMPERSTACK_LEDGER_PATH), then
      C(~/.ansible/temperstack/ledger.sqlite3).
    type: str
  ledger_url:
    description: The shared PostgreSQL ledger, as the alert module's C(ledger_url). Default C(TEMPERSTACK_LEDGER_URL).
    type: str
  webhook_url:
    description: The endpoint the alerts belong to (the ledger keeps alerts per endpoint). Default
      C(TEMPERSTACK_WEBHOOK_URL); or C(api_key) with C(org) or C(base_url), as for the alert module.
    type: str
  api_key:
    description: See O(webhook_url). Default C(TEMPERSTACK_API_KEY).
    type: str
  org:
    description: See O(webhook_url). Default C(TEMPERSTACK_ORG).
    type: str
  base_url:
    description: See O(webhook_url). Default C(TEMPERSTACK_BASE_URL).
    type: str
"""

EXAMPLES = r"""
- name: Temperstack through ansible-rulebook's own webhook
  hosts: all
  sources:
    - eda.builtin.webhook:
        host: 0.0.0.0
        port: 5000
        token: "{{ temperstack_webhook_token }}"
      filters:
        - temperstack.alerting.normalize:
            field_map:
              alert_name: alert.title
  rules:
    - name: Remediate
      condition: event.temperstack.status == "Alarm"
      action:
        run_playbook:
          name: remediate.yml
"""

# Named, not __name__: ansible-rulebook runs this file by path, as a module called <run_path>.
logger = logging.getLogger('temperstack.alerting.normalize')


def _plugin_utils() -> t.Any:
    """The collection's shared EDA code; ansible-rulebook runs this file by path, so find the collection from it."""
    try:
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.temperstack.alerting.plugins.plugin_utils import _eda
    except ImportError:
        here = pathlib.Path(globals().get('__file__', '')).resolve()
        if len(here.parents) < 8 or here.parents[6].name != 'ansible_collections':
            raise
        sys.path.append(str(here.parents[7]))
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.temperstack.alerting.plugins.plugin_utils import _eda
    return _eda


def main(event: t.Any, **args: t.Any) -> t.Any:
    """Add ``event.temperstack`` and ``meta.hosts`` to ``event``; it is never dropped."""
    eda = _plugin_utils()
    return eda.normalize_event(event, eda.filter_options(args), logger.warning)
