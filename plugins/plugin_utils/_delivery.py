# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The one path an alert takes: ledger decision, client, record."""

from __future__ import annotations

import typing as t

from ._alert import Alert
from ._client import RETRY_AFTER_CAP, TemperstackClient
from ._endpoint import Endpoint
from ._ledger import Ledger, Record


class Outcome(t.NamedTuple):
    alert: Alert
    previous: Record | None
    changed: bool
    sent: bool = False
    http_status: int | None = None
    attempts: int = 0


def is_news(alert: Alert, known: Record | None) -> bool:
    """Whether Temperstack would learn something from ``alert``, given what it is known to hold."""
    return known is None or known.status != alert.status or known.fingerprint != alert.fingerprint


def deliver(
    alert: Alert,
    endpoint: Endpoint,
    ledger: Ledger,
    client: TemperstackClient,
    force: bool = False,
    check_mode: bool = False,
) -> Outcome:
    """Send ``alert`` if it is news (or ``force``), and record it once Temperstack acknowledged it.

    Raises ``DeliveryError`` when Temperstack did not acknowledge it; the ledger is then unchanged.
    """
    previous = ledger.lookup(endpoint.ledger_key, alert.alert_id)
    wanted = force or is_news(alert, previous)
    if check_mode or not wanted:
        return Outcome(alert, previous, changed=wanted)

    with ledger.claim(endpoint.ledger_key, alert.alert_id, lease=claim_lease(client)) as current:
        if current is not None and current.pending:
            # The callback queued this alert and could not deliver it yet: it goes first, so that an OK
            # never reaches Temperstack before the Alarm it resolves.
            current = _deliver_queued(alert.alert_id, endpoint, ledger, client)
        # Another fork may have sent this very alert while we waited for the claim.
        if not force and not is_news(alert, current):
            return Outcome(alert, current, changed=False)
        delivery = client.send(alert.payload)
        ledger.record(endpoint.ledger_key, alert)
    return Outcome(alert, current, True, True, delivery.http_status, delivery.attempts)


def _deliver_queued(alert_id: str, endpoint: Endpoint, ledger: Ledger, client: TemperstackClient) -> Record | None:
    for queued in ledger.pending(endpoint.ledger_key):
        if queued.alert.alert_id == alert_id:
            client.send(queued.alert.payload)
            ledger.delivered(endpoint.ledger_key, queued)
    return ledger.lookup(endpoint.ledger_key, alert_id)


def claim_lease(client: TemperstackClient) -> float:
    """The longest one send can take, so a claim outlives its holder's work but not its holder."""
    return client.max_attempts * (client.timeout + RETRY_AFTER_CAP) + 5.0
