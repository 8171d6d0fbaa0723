# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.alert_info module, run on the controller: what the ledger holds, read-only."""

from __future__ import annotations

import time
import typing as t

from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._argument_specs import CONNECTION_ARGUMENT_SPEC
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import STATUSES, AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import EndpointError, resolve_integrations
from ansible_collections.temperstack.alerting.plugins.plugin_utils._globs import glob_matches
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Entry,
    Ledger,
    LedgerError,
    Record,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import check_ledger_url, ledger_spec
from ansible_collections.temperstack.alerting.plugins.plugin_utils._silences import describe_silence, iso

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    **CONNECTION_ARGUMENT_SPEC,
    'alert_id': {'type': 'list', 'elements': 'str'},
    'status': {'type': 'str', 'default': 'any'},
    'resource_id': {'type': 'list', 'elements': 'str'},
    'host': {'type': 'str'},
    'queued_only': {'type': 'bool', 'default': False},
}
STATUS_CHOICES = (*STATUSES, 'any')


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            status = _status(args['status'])
            # Routing: the integration option's endpoint, or the default one and every integration with an endpoint.
            endpoints = resolve_integrations(args)
            spec = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])
            # Read-only whatever the mode: listing must never create, migrate or change a ledger.
            with open_ledger(spec, read_only=True) as ledger:
                keys = {endpoint.ledger_key for endpoint in endpoints}
                reports = [(endpoint.integration, _report(ledger, endpoint.ledger_key, args, status, keys))
                           for endpoint in endpoints]
                result.update(_merged(reports))
        except (AlertValidationError, EndpointError, LedgerError) as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result['changed'] = False
        return result


def _status(value: str) -> str:
    for choice in STATUS_CHOICES:
        if value.lower() == choice.lower():
            return choice
    raise AlertValidationError(f"status must be one of {', '.join(STATUS_CHOICES)}; got {value!r}")


def _merged(reports: t.Sequence[tuple[str, dict[str, t.Any]]]) -> dict[str, t.Any]:
    """One listing of several integrations' reports: each alert and queued entry names its integration, never its
    URL or key."""
    merged = dict(reports[0][1])
    merged['alerts'] = sorted(
        ({**alert, 'integration': name} for name, report in reports for alert in report['alerts']),
        key=lambda alert: alert['alert_id'],
    )
    merged['queued'] = [{**entry, 'integration': name} for name, report in reports for entry in report['queued']]
    return merged


def _report(
    ledger: Ledger, key: str, args: t.Mapping[str, t.Any], status: str, keys: t.Collection[str] = ()
) -> dict[str, t.Any]:
    now = time.time()
    entries = ledger.entries()
    mine = [entry for entry in entries if entry.endpoint == key]
    # The newest entry of each alert (entries come oldest first): what it will say next.
    waiting = {entry.alert.alert_id: entry for entry in mine}
    withheld = {item.record.alert_id: item for item in ledger.withheld(key)}
    known = {record.alert_id: record for record in ledger.records(key)}
    # An alert that is only queued or only withheld is an alert too: its newest statement stands for it.
    for entry in mine:
        if entry.alert.alert_id not in known:
            known[entry.alert.alert_id] = Record(entry.alert.alert_id, entry.alert.status, entry.alert.fingerprint,
                                                 dict(entry.alert.payload), entry.queued, True, entry.hosts)
    for alert_id, item in withheld.items():
        known.setdefault(alert_id, item.record)

    def wanted(alert_id: str, record_status: str, resource_id: str | None, hosts: t.Sequence[str]) -> bool:
        return (
            (not args['alert_id'] or glob_matches(alert_id, args['alert_id']))
            and (status == 'any' or record_status == status)
            and (not args['resource_id'] or (resource_id is not None and glob_matches(resource_id, args['resource_id'])))
            and (not args['host'] or args['host'] in hosts or resource_id == args['host'])
            and (not args['queued_only'] or alert_id in waiting)
        )

    alerts = []
    for alert_id in sorted(known):
        record = known[alert_id]
        # What Temperstack holds is the acknowledged record; a queued entry or a withheld Alarm is what was stated since.
        stated = withheld[alert_id].record if alert_id in withheld else record
        if alert_id in waiting and alert_id not in withheld:
            stated = Record(alert_id, waiting[alert_id].alert.status, '', dict(waiting[alert_id].alert.payload),
                            waiting[alert_id].queued, True, waiting[alert_id].hosts)
        # A queued OK names no host, but is about the hosts of the Alarm it resolves.
        if wanted(alert_id, stated.status, stated.payload.get('resource_id'), (*record.hosts, *stated.hosts)):
            alerts.append(_alert(record, alert_id in waiting, withheld.get(alert_id)))
    queued = [_entry(entry, now) for entry in mine if wanted(
        entry.alert.alert_id, entry.alert.status, entry.alert.payload.get('resource_id'),
        (*known[entry.alert.alert_id].hosts, *entry.hosts))]
    elsewhere: dict[str, int] = {}
    for entry in entries:
        if entry.endpoint != key and entry.endpoint not in keys:
            # Only the hash is stored, never the key: its first characters tell endpoints apart.
            shown = f'sha256:{entry.endpoint[:12]}'
            elsewhere[shown] = elsewhere.get(shown, 0) + 1
    return {
        'alerts': alerts,
        'queued': queued,
        'queued_elsewhere': sum(elsewhere.values()),
        'other_endpoints': [{'endpoint': name, 'queued': count} for name, count in sorted(elsewhere.items())],
        'silences': [describe_silence(silence, now) for silence in ledger.silences()],
        'ledger': ledger.location,
    }


def _alert(record: Record, waiting: bool, withheld: t.Any) -> dict[str, t.Any]:
    acknowledged = not record.pending and (withheld is None or withheld.record is not record)
    return {
        'alert_id': record.alert_id,
        'status': record.status if acknowledged else None,
        # Temperstack's fields; for an alert it has never acknowledged, the fields last stated for it.
        'fields': dict(record.payload),
        'hosts': list(record.hosts),
        'changed': iso(record.updated) if acknowledged else None,
        'queued': waiting,
        'withheld_by': withheld.silence if withheld is not None else None,
        'withheld_status': withheld.record.status if withheld is not None else None,
    }


def _entry(entry: Entry, now: float) -> dict[str, t.Any]:
    return {
        'alert_id': entry.alert.alert_id,
        'status': entry.alert.status,
        'fields': dict(entry.alert.payload),
        'queued': iso(entry.queued),
        'age': round(max(now - entry.queued, 0.0), 1),
        # Failed deliveries (the ledger's attempts column), each of up to retries + 1 HTTP requests: not the
        # "after N attempts" of a delivery error, which counts requests, hence not named attempts.
        'failed_deliveries': entry.attempts,
        'held': entry.held,
    }
