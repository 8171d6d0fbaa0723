# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.outbox module, run on the controller: discard alerts stuck in the outbox."""

from __future__ import annotations

import time
import typing as t

from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._argument_specs import CONNECTION_ARGUMENT_SPEC
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import (
    EndpointError,
    resolve_endpoint,
    resolve_integrations,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._globs import glob_matches
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Entry,
    Ledger,
    LedgerError,
    Queued,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import check_ledger_url, ledger_spec
from ansible_collections.temperstack.alerting.plugins.plugin_utils._silences import iso, parse_duration

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    **CONNECTION_ARGUMENT_SPEC,
    'state': {'type': 'str', 'default': 'absent', 'choices': ['absent']},
    'alert_id': {'type': 'list', 'elements': 'str'},
    'older_than': {'type': 'str'},
    'other_endpoint': {'type': 'str'},
}
# A discard waits for no sender: an entry being delivered right now is left to it.
CLAIM_LEASE_SECONDS = 30.0
ENDPOINT_PREFIX = 'sha256:'


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check_mode = bool(self._task.check_mode)
        try:
            if not (args['alert_id'] or args['older_than'] or args['other_endpoint']):
                raise AlertValidationError(
                    'say which queued alerts to discard: alert_id (glob patterns), older_than (such as 7d), '
                    'or other_endpoint (a rotated key\'s, as alert_info names it); nothing is discarded otherwise'
                )
            age = parse_duration(args['older_than'], 'older_than') if args['older_than'] is not None else None
            key = _endpoint_key(args)
            spec = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])
            with open_ledger(spec, read_only=check_mode) as ledger:
                chosen = [entry for entry in ledger.entries() if _chosen(entry, key, args, age)]
                busy = [] if check_mode else _discard(ledger, chosen)
        except (AlertValidationError, EndpointError, LedgerError) as exc:
            result.update(failed=True, msg=str(exc))
            return result
        discarded = [entry for entry in chosen if entry.seq not in busy]
        result.update(
            changed=bool(discarded),
            discarded=[_shown(entry) for entry in discarded],
            busy=len(busy),
            msg=f"{len(discarded)} queued alerts {'would be ' if check_mode else ''}discarded"
            + (f'; {len(busy)} left, being delivered right now' if busy else ''),
        )
        if self._task.diff:
            result['diff'] = {
                'before': ''.join(f"{entry['alert_id']} {entry['status']} queued {entry['queued']}\n" for entry in result['discarded']),
                'after': '',
            }
        return result


def _chosen(entry: Entry, key: str, args: t.Mapping[str, t.Any], age: float | None) -> bool:
    if entry.held:
        return False  # a running playbook still decides it
    if not entry.endpoint.startswith(key):
        return False
    if args['alert_id'] and not glob_matches(entry.alert.alert_id, args['alert_id']):
        return False
    return age is None or time.time() - entry.queued >= age


def _endpoint_key(args: t.Mapping[str, t.Any]) -> str:
    """The endpoint whose entries are discarded: the connection options', or the one other_endpoint names."""
    if args['other_endpoint'] is None:
        if args['integration'] is not None:
            return resolve_integrations(args)[0].ledger_key
        return resolve_endpoint(args).ledger_key
    # As alert_info shows it: never the key, only the start of its hash, enough to tell endpoints apart.
    shown = args['other_endpoint'].strip()
    prefix = shown[len(ENDPOINT_PREFIX):] if shown.startswith(ENDPOINT_PREFIX) else ''
    if len(prefix) < 12 or not all(char in '0123456789abcdef' for char in prefix):
        raise AlertValidationError(
            f'other_endpoint must be an endpoint as alert_info lists it under other_endpoints, such as '
            f'sha256:9f2c1e07a4b3; got {shown!r}'
        )
    return prefix


def _discard(ledger: Ledger, entries: t.Sequence[Entry]) -> list[int]:
    """Discard each entry under its alert's claim; returns the entries left because a sender holds the claim."""
    busy = []
    for entry in entries:
        claim = ledger.try_claim(entry.endpoint, entry.alert.alert_id, CLAIM_LEASE_SECONDS)
        if claim is None:
            busy.append(entry.seq)
            continue
        try:
            ledger.discard(Queued(entry.seq, entry.alert, entry.hosts), claim)
        finally:
            ledger.release(claim)
    return busy


def _shown(entry: Entry) -> dict[str, t.Any]:
    return {
        'alert_id': entry.alert.alert_id,
        'status': entry.alert.status,
        'queued': iso(entry.queued),
        'failed_deliveries': entry.attempts,  # deliveries, not HTTP requests (see alert_info)
    }
