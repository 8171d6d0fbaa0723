# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Event-Driven Ansible: what the event filter ``normalize`` and the event source ``webhook`` share.

Standard library only: both run inside ansible-rulebook's Python, which may have no ansible-core. The ledger is
read in one place, ``_hosts_of_open_alarm``, and only through the ``Ledger`` interface.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import typing as t
from collections import OrderedDict

from ._alert import FIELDS, STATUS_ALARM, STATUS_OK, derive_alert_id
from ._endpoint import CONNECTION_OPTIONS, EndpointError, resolve_endpoint

HOSTS_FROM = ('ledger', 'resource_id', 'none')
FILTER_OPTIONS = ('field_map', 'hosts_from', 'ledger_path', 'ledger_url') + CONNECTION_OPTIONS
LEDGER_URL_ENV = 'TEMPERSTACK_LEDGER_URL'
LEDGER_PATH_ENV = 'TEMPERSTACK_LEDGER_PATH'
NAME = 'temperstack.alerting.normalize'

Warn = t.Callable[[str], None]


class EventOptionError(ValueError):
    """An argument of the filter or the source is wrong; the message names it."""


def filter_options(args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The filter's arguments, checked: unknown names, a bad ``hosts_from`` or ``field_map`` fail with their name."""
    unknown = sorted(set(args) - set(FILTER_OPTIONS))
    if unknown:
        raise EventOptionError(
            f"{NAME}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(FILTER_OPTIONS)}"
        )
    options: dict[str, t.Any] = {name: args.get(name) for name in FILTER_OPTIONS}
    hosts_from = options['hosts_from'] if options['hosts_from'] is not None else 'ledger'
    if hosts_from not in HOSTS_FROM:
        raise EventOptionError(f"{NAME}: hosts_from must be one of {', '.join(HOSTS_FROM)}, got {hosts_from!r}")
    options['hosts_from'] = hosts_from
    field_map = options['field_map'] or {}
    if not isinstance(field_map, dict):
        raise EventOptionError(f'{NAME}: field_map must be a mapping of field names to dotted paths')
    for field, path in field_map.items():
        if field not in FIELDS:
            raise EventOptionError(f"{NAME}: field_map names {field!r}, which is not one of {', '.join(FIELDS)}")
        if not isinstance(path, str) or not path or any(not part for part in path.split('.')):
            raise EventOptionError(f'{NAME}: field_map.{field} must be a dotted path such as alert.name, got {path!r}')
    options['field_map'] = {field: field_map.get(field, field) for field in FIELDS}
    for name in ('ledger_path', 'ledger_url') + CONNECTION_OPTIONS:
        if options[name] is not None and not isinstance(options[name], str):
            raise EventOptionError(f'{NAME}: {name} must be a string')
    return options


def payload_of(event: t.Mapping[str, t.Any]) -> t.Any:
    """Where the payload of an event is: ``payload`` for webhook sources and Event Streams, else the event itself."""
    payload = event.get('payload')
    return payload if isinstance(payload, dict) else event


def _at(payload: t.Any, path: str) -> t.Any:
    value = payload
    for part in path.split('.'):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _text(value: t.Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return 'true' if value else 'false'
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def normalize_status(value: str | None) -> str | None:
    """``Alarm`` or ``OK`` in any letter case (and surrounding blanks) as the seed spells them; anything else as is."""
    if value is None:
        return None
    folded = value.strip().casefold()
    for status in (STATUS_ALARM, STATUS_OK):
        if folded == status.casefold():
            return status
    return value


def temperstack_fields(payload: t.Any, field_map: t.Mapping[str, str]) -> dict[str, str]:
    """The seed's eleven fields found in ``payload`` through ``field_map``, as text; absent fields are left out."""
    fields: dict[str, str] = {}
    for field in FIELDS:
        value = _text(_at(payload, field_map.get(field, field)))
        if value is not None:
            fields[field] = value
    if 'status' in fields:
        fields['status'] = normalize_status(fields['status']) or fields['status']
    if 'alert_id' not in fields and 'alert_name' in fields:
        # As the alert module derives it, so that a rulebook's OK addresses the alert a playbook raised.
        fields['alert_id'] = derive_alert_id(fields['alert_name'], fields.get('resource_id'))
    return fields


def normalize_event(
    event: t.Any, options: t.Mapping[str, t.Any], warn: Warn, environ: t.Mapping[str, str] | None = None
) -> t.Any:
    """Add ``event['temperstack']`` and, per ``hosts_from``, ``event['meta']['hosts']``. Never drops an event."""
    if not isinstance(event, dict):
        warn(f'{NAME}: the event is not a mapping ({type(event).__name__}); passed on unchanged')
        return event
    fields = temperstack_fields(payload_of(event), options['field_map'])
    if 'alert_id' not in fields and 'alert_name' not in fields:
        warn(
            f'{NAME}: the event has neither alert_id nor alert_name (looked for '
            f"{options['field_map']['alert_id']!r} and {options['field_map']['alert_name']!r}); passed on unchanged. "
            'Set field_map if the sender uses other names'
        )
        return event
    if fields.get('status') not in (STATUS_ALARM, STATUS_OK, None):
        warn(f"{NAME}: alert {fields['alert_id']!r} has status {fields['status']!r}, which is neither Alarm nor OK")
    event['temperstack'] = fields
    hosts = hosts_for(fields, options, warn, environ)
    if hosts:
        meta = event.get('meta')
        if not isinstance(meta, dict):
            meta = event['meta'] = {}
        meta['hosts'] = hosts
    return event


def hosts_for(
    fields: t.Mapping[str, str], options: t.Mapping[str, t.Any], warn: Warn,
    environ: t.Mapping[str, str] | None = None,
) -> list[str]:
    """The hosts a remediation of this alert should run on, per ``hosts_from``; empty with a warning if unknown."""
    if options['hosts_from'] == 'none':
        return []
    alert_id = fields['alert_id']
    if options['hosts_from'] == 'resource_id':
        if 'resource_id' in fields:
            return [fields['resource_id']]
        warn(f'{NAME}: alert {alert_id!r} has no resource_id (hosts_from: resource_id); meta.hosts not set')
        return []
    environ = os.environ if environ is None else environ
    try:
        endpoint = resolve_endpoint({name: options.get(name) for name in CONNECTION_OPTIONS}, environ)
    except EndpointError as exc:
        warn(f'{NAME}: cannot tell which endpoint alert {alert_id!r} belongs to ({exc}); meta.hosts not set')
        return []
    url = options.get('ledger_url') or environ.get(LEDGER_URL_ENV) or None
    path = options.get('ledger_path') or environ.get(LEDGER_PATH_ENV) or None
    return _hosts_of_open_alarm(url, path, endpoint.ledger_key, alert_id, warn)


def _hosts_of_open_alarm(url: str | None, path: str | None, endpoint_key: str, alert_id: str, warn: Warn) -> list[str]:
    """The hosts of ``alert_id``'s open Alarm as the ledger knows them; [] with a warning when it cannot tell.

    All of the filter's ledger access is here: the ledger is opened as the alert module opens it, read only.
    """
    try:
        # pylint: disable=import-outside-toplevel
        from ._ledger import LedgerError
        from ._ledger_open import open_ledger
        from ._ledger_spec import check_ledger_url, ledger_spec
        # pylint: enable=import-outside-toplevel
    except ImportError as exc:
        warn(
            f'{NAME}: cannot read the ledger in this Python ({exc}); install ansible-core in the '
            'decision environment, or set hosts_from: resource_id or none. meta.hosts not set'
        )
        return []
    try:
        spec = ledger_spec(check_ledger_url(url), path)
        with open_ledger(spec, warn=warn, read_only=True) as ledger:
            record = ledger.lookup(endpoint_key, alert_id)
    except LedgerError as exc:
        warn(f'{NAME}: cannot read the ledger ({exc}); alert {alert_id!r} passed on without meta.hosts')
        return []
    except Exception as exc:  # pylint: disable=broad-exception-caught  # an event is never lost to a ledger fault
        warn(f'{NAME}: unexpected {type(exc).__name__} reading the ledger; alert {alert_id!r} passed on without meta.hosts')
        return []
    if record is None:
        warn(f'{NAME}: the ledger does not know alert {alert_id!r}; meta.hosts not set')
        return []
    if record.status != STATUS_ALARM:
        warn(f'{NAME}: the ledger holds no open Alarm for alert {alert_id!r} (last: {record.status}); meta.hosts not set')
        return []
    if not record.hosts:
        warn(f'{NAME}: the open Alarm of alert {alert_id!r} names no hosts (a task raised it); meta.hosts not set')
        return []
    return list(record.hosts)


class Deduplicator:
    """Remembers the last event per alert: the same status and payload again within ``seconds`` is a duplicate.

    Alarm, OK, Alarm are three events: each differs from the one before it. Bounded: the least recently seen
    alerts are forgotten beyond ``limit``.
    """

    def __init__(self, seconds: float, limit: int = 10000, clock: t.Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.limit = limit
        self.clock = clock
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def seen(self, key: str | None, payload: t.Any) -> bool:
        """Whether this delivery repeats the last one of ``key`` (no key: never); records it either way."""
        if key is None or self.seconds <= 0:
            return False
        digest = hashlib.sha256(
            json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8', 'replace')
        ).hexdigest()
        now = self.clock()
        last = self._last.pop(key, None)
        self._last[key] = (digest, now if last is None or last[0] != digest or now - last[1] > self.seconds else last[1])
        while len(self._last) > self.limit:
            self._last.popitem(last=False)
        return last is not None and last[0] == digest and now - last[1] <= self.seconds
