# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""What both ledger backends store the same way: JSON text, and the rows that become the interface's value types."""

from __future__ import annotations

import json
import time
import typing as t

from ._alert import Alert
from ._ledger import Entry, Record, Silence, Withheld


def dumps(value: t.Any) -> str:
    """JSON for a column. ASCII with \\u escapes: a host name with undecodable bytes (a lone surrogate) is stored and
    read back as it is, where SQLite would refuse it as text (UnicodeEncodeError)."""
    return json.dumps(value, sort_keys=True)


def record_from_row(alert_id: str, row: t.Sequence[t.Any], pending: bool = False) -> Record:
    """A Record from ``(status, fingerprint, payload, updated, hosts)``."""
    status, fingerprint, payload, updated, hosts = row[:5]
    return Record(alert_id, status, fingerprint, json.loads(payload), updated, pending, tuple(json.loads(hosts)))


def exported_from_row(row: t.Sequence[t.Any]) -> tuple[str, int | None, Record]:
    endpoint, seq, alert_id, status, fingerprint, payload, updated, pending, hosts = row
    return endpoint, seq, Record(alert_id, status, fingerprint, json.loads(payload), updated, bool(pending), tuple(json.loads(hosts)))


def entry_from_row(row: t.Sequence[t.Any]) -> Entry:
    endpoint, seq, payload, hosts, queued, attempts, held = row
    return Entry(endpoint, seq, Alert(json.loads(payload)), tuple(json.loads(hosts)), queued, int(attempts), bool(held))


def silence_to_row(silence: Silence) -> tuple[t.Any, ...]:
    matchers = {'alert_id': list(silence.alert_ids), 'resource_id': list(silence.resource_ids), 'hosts': list(silence.hosts)}
    return (silence.name, dumps(matchers), silence.starts, silence.ends, silence.comment, silence.created or time.time())


def silence_from_row(row: t.Sequence[t.Any]) -> Silence:
    name, matchers, starts, ends, comment, created = row
    found = json.loads(matchers)
    return Silence(
        name, tuple(found.get('alert_id', ())), tuple(found.get('resource_id', ())), tuple(found.get('hosts', ())),
        starts, ends, comment, created,
    )


def withheld_from_row(row: t.Sequence[t.Any]) -> Withheld:
    silence, alert_id, status, fingerprint, payload, updated, hosts = row
    return Withheld(silence, Record(alert_id, status, fingerprint, json.loads(payload), updated, False, tuple(json.loads(hosts))))
