# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.alert module, run on the controller: options in, outcome out."""

from __future__ import annotations

import contextlib
import math
import os
import typing as t

# Not used here. ansible-playbook loads this plugin before it forks a worker for each task and host, so every
# worker inherits ansible.module_utils.urls instead of importing it for its first request, which would cost
# each task some 20 ms. The client itself imports it only when it sends (see _client._urls).
import ansible.module_utils.urls  # pylint: disable=unused-import
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import (
    FIELDS,
    AlertValidationError,
    build_alert,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._argument_specs import CONNECTION_ARGUMENT_SPEC
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (
    SendError,
    TemperstackClient,
    check_ca_path,
    check_retries,
    check_timeout,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import Outcome, dispatch
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import (
    EndpointError,
    resolve_endpoint,
    resolve_integration,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Ledger, LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import (
    LedgerWithFallback,
    discard_shared,
    open_ledger,
    shared_ledger,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    fallback_path,
    is_url,
    ledger_spec,
)

if os.environ.get('TEMPERSTACK_LEDGER_URL'):
    # For the same reason as ansible.module_utils.urls above: with a shared ledger configured, every worker inherits
    # psycopg (100 ms of imports each) instead of importing it for its first task. Never when it is not configured.
    from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_postgres  # noqa: F401 pylint: disable=unused-import

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    # The alert fields are type-checked by the core, which rejects lists and dictionaries instead of
    # turning them into their Python text as type=str would.
    **{field: {'type': 'raw'} for field in FIELDS},
    **CONNECTION_ARGUMENT_SPEC,
    'force': {'type': 'bool', 'default': False},
    'only_if_raised': {'type': 'bool', 'default': False},
    'failures_before_alarm': {'type': 'int', 'default': 1},
    'successes_before_ok': {'type': 'int', 'default': 1},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp

        try:
            _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        except (OverflowError, ValueError) as exc:
            # ansible-core's int conversion raises these, naming no option, for .inf and .nan.
            raise AnsibleActionFail(f'{_non_finite(self._task.args)} must be a finite number ({exc})') from None
        warnings: list[str] = []
        try:
            if args['integration'] is not None and resolve_integration(args['integration'], args) is None:
                build_alert(args)  # bad input is still an error
                result.update(changed=False, sent=False, http_status=None, attempts=0, integration='none',
                              msg='integration none: nothing is sent')
                return result
            outcome = self._deliver(args, warnings, (task_vars or {}).get('inventory_hostname'))
        except (AlertValidationError, EndpointError, LedgerError) as exc:
            result.update(failed=True, msg=str(exc), sent=False, http_status=None, attempts=0)
        except SendError as exc:
            result.update(failed=True, msg=exc.message, sent=False, http_status=exc.http_status, attempts=exc.attempts)
        else:
            result.update(_outcome_result(outcome, diff=self._task.diff))
            if args['integration'] is not None:
                result['integration'] = args['integration'].strip()
            if outcome.unrecorded:
                warnings.append(
                    f'{outcome.alert.status} for alert {outcome.alert.alert_id} reached Temperstack, but the ledger '
                    f'could not record it ({outcome.unrecorded}); the next run may send it again'
                )
        if warnings:
            result['warnings'] = warnings
        return result

    def _deliver(self, args: dict[str, t.Any], warnings: list[str], host: str | None) -> Outcome:
        # Everything is validated before the ledger is opened or a request is made.
        alert = build_alert(args)
        damping = (_at_least_one(args, 'failures_before_alarm'), _at_least_one(args, 'successes_before_ok'))
        endpoint = resolve_endpoint(args) if args['integration'] is None else resolve_integration(args['integration'], args)
        client = TemperstackClient(
            endpoint,
            timeout=check_timeout(args['timeout']),
            retries=check_retries(args['retries']),
            validate_certs=args['validate_certs'],
            ca_path=check_ca_path(args['ca_path']),
        )
        check_mode = bool(self._task.check_mode)
        spec = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])

        fallback = fallback_path(args['ledger_path']) if is_url(spec) else None
        with _ledger(spec, warnings.append, check_mode, fallback) as ledger:
            if not check_mode:
                ledger.prune_if_due()
            # Alerting matters most when infrastructure fails, and the ledger's server may be part of the outage: then
            # the alert still goes out, decided by this controller's fallback file, which a later run that reaches the
            # server moves into the shared ledger.
            fail_open = isinstance(ledger, LedgerWithFallback) and ledger.degraded
            outcome = dispatch(
                alert,
                endpoint,
                ledger,
                client,
                force=args['force'],
                check_mode=check_mode,
                warn=warnings.append,
                only_if_raised=args['only_if_raised'],
                hosts=(host,) if host else (),
                damping=damping,
                fail_open=fail_open,
            )
            if isinstance(ledger, LedgerWithFallback) and ledger.degraded:
                decided = ('was decided without it, so it is sent whatever Temperstack already holds (silences and flap '
                           'damping still apply), and' if fail_open else 'was decided by it before it was lost, and is')
                warnings.append(
                    f'{ledger.unreachable}. {alert.status} for alert {alert.alert_id} {decided} remembered in {fallback} '
                    'until a later run on this controller reaches the shared ledger'
                )
            return outcome


@contextlib.contextmanager
def _ledger(spec: str, warn: t.Callable[[str], None], check_mode: bool, fallback: str | None) -> t.Iterator[Ledger]:
    """The ledger for one task: the worker's shared one, or in check mode a read-only one that changes nothing on disk.

    The items of a loop run in one worker process; sharing one ledger connection between them saves SQLite's
    checkpoint and write-ahead-log set-up on every item (see ``shared_ledger``).
    """
    if check_mode:
        with open_ledger(spec, warn=warn, read_only=True, fallback=fallback, on_fallback=lambda exc: None) as ledger:
            yield ledger
        return
    ledger = shared_ledger(spec, warn=warn, fallback=fallback)
    try:
        yield ledger
    except LedgerError:
        discard_shared(ledger)
        raise


def _at_least_one(args: t.Mapping[str, t.Any], name: str) -> int:
    if args[name] < 1:
        raise AlertValidationError(f'{name} must be 1 or more (1 sends at the first time, as without it); got {args[name]}')
    return int(args[name])


def _non_finite(args: t.Mapping[str, t.Any]) -> str:
    names = sorted(name for name, value in args.items() if isinstance(value, float) and not math.isfinite(value))
    return ' and '.join(names) or 'every number'


def _outcome_result(outcome: Outcome, diff: bool) -> dict[str, t.Any]:
    alert, previous = outcome.alert, outcome.previous
    result: dict[str, t.Any] = {
        'changed': outcome.changed,
        'alert_id': alert.alert_id,
        'status': alert.status,
        'previous_status': previous.status if previous else None,
        'sent': outcome.sent,
        'payload': dict(alert.payload),
        'http_status': outcome.http_status,
        'attempts': outcome.attempts,
        'msg': _summary(outcome),
    }
    if outcome.silenced:
        result['silenced'] = outcome.silenced
    if outcome.damped:
        result['damped'] = outcome.damped
    if diff:
        before = {'status': previous.status, 'payload': previous.payload} if previous else {}
        result['diff'] = {
            'before_header': f'Temperstack alert {alert.alert_id} (as recorded in the ledger)',
            'after_header': f'Temperstack alert {alert.alert_id}',
            'before': before,
            # A withheld OK leaves Temperstack as it was.
            'after': dict(before) if outcome.withheld or outcome.silenced or outcome.damped
            else {'status': alert.status, 'payload': dict(alert.payload)},
        }
    return result


def _summary(outcome: Outcome) -> str:
    alert_id, status = outcome.alert.alert_id, outcome.alert.status
    if outcome.damped:
        return f'{status} not sent for alert {alert_id} yet: stated {outcome.damped} times in a row'
    if outcome.silenced and status == 'OK':
        return (f'OK not sent for alert {alert_id}: its Alarm was withheld by silence {outcome.silenced} and never '
                'reached Temperstack, so there is nothing to resolve')
    if outcome.silenced:
        return f'Alarm withheld for alert {alert_id} by silence {outcome.silenced}; it is sent if still stated once the silence ends'
    if outcome.withheld:
        withheld = f'OK not sent for alert {alert_id}: it is not on record as Alarm (only_if_raised)'
        if outcome.sent:
            return f'Queued alerts delivered; {withheld}'
        if outcome.changed:
            return f'Queued alerts would be delivered; {withheld}'
        return withheld
    if outcome.sent and outcome.unrecorded:
        return f'{status} sent for alert {alert_id}, but not recorded in the ledger'
    if outcome.sent:
        return f'{status} sent for alert {alert_id}'
    if outcome.changed:
        return f'{status} would be sent for alert {alert_id}'
    return f'Temperstack already holds {status} for alert {alert_id}; nothing sent'
