# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.ledger_copy module, run on the controller: one ledger's memory into another."""

from __future__ import annotations

import os
import typing as t

from ansible.module_utils.common.parameters import env_fallback
from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import CONNECTION_OPTIONS, EndpointError, resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Copied,
    LedgerError,
    copy_ledger,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    default_ledger_path,
    ledger_spec,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    'from_ledger_path': {'type': 'path'},
    'from_ledger_url': {'type': 'str', 'no_log': True},
    'ledger_url': {'type': 'str', 'no_log': True, 'fallback': (env_fallback, ['TEMPERSTACK_LEDGER_URL'])},
    'ledger_path': {'type': 'path'},
    # A key rotation: the old endpoint, and the new one as the alert module takes it.
    'from_webhook_url': {'type': 'str', 'no_log': True},
    'from_api_key': {'type': 'str', 'no_log': True},
    'webhook_url': {'type': 'str', 'no_log': True},
    'api_key': {'type': 'str', 'no_log': True},
    'org': {'type': 'str'},
    'base_url': {'type': 'str'},
}
MUTUALLY_EXCLUSIVE = [('from_ledger_path', 'from_ledger_url'), ('from_webhook_url', 'from_api_key')]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE)
        check_mode = bool(self._task.check_mode)
        try:
            endpoints = _rotation(args)
            if endpoints is not None:
                # Within one ledger: the old endpoint's alerts move to the new one.
                spec = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])
                with open_ledger(spec, read_only=check_mode) as ledger:
                    copied = copy_ledger(ledger, ledger, move=True, endpoints=endpoints, dry_run=check_mode)
                    result.update(source=ledger.location, target=ledger.location)
            else:
                source_spec, target_spec = _specs(args)
                with open_ledger(source_spec, read_only=True) as source, open_ledger(target_spec, read_only=check_mode) as target:
                    copied = copy_ledger(source, target, dry_run=check_mode)
                    result.update(source=source.location, target=target.location)
        except (EndpointError, LedgerError) as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(_copied_result(copied, check_mode, diff=self._task.diff))
        return result


def _rotation(args: t.Mapping[str, t.Any]) -> dict[str, str] | None:
    """For a key rotation, the old endpoint's ledger key mapped to the new one's; None for a copy between ledgers."""
    if args['from_webhook_url'] is None and args['from_api_key'] is None:
        return None
    if args['from_ledger_path'] is not None or args['from_ledger_url'] is not None:
        raise LedgerError('from_webhook_url and from_api_key move alerts within one ledger; leave out from_ledger_path and from_ledger_url')
    new = resolve_endpoint({name: args[name] for name in CONNECTION_OPTIONS})
    try:
        if args['from_webhook_url'] is not None:
            old = resolve_endpoint({'webhook_url': args['from_webhook_url']}, environ={})
        else:
            # The old key at the same place as the new one: only the key was rotated.
            old = resolve_endpoint({'api_key': args['from_api_key'], 'org': args['org'], 'base_url': args['base_url']})
    except EndpointError as exc:
        given = 'from_webhook_url' if args['from_webhook_url'] is not None else 'from_api_key'
        raise EndpointError(f'{given} (the endpoint before the rotation): {exc}') from None
    if old.ledger_key == new.ledger_key:
        raise EndpointError('the old endpoint (from_webhook_url or from_api_key) is the new one; give the key before the rotation')
    return {old.ledger_key: new.ledger_key}


def _specs(args: t.Mapping[str, t.Any]) -> tuple[str, str]:
    """The source and target ledgers: each a URL or an absolute path, never the same one, the source existing."""
    from_url = check_ledger_url(args['from_ledger_url']) if args['from_ledger_url'] is not None else None
    if from_url is None:
        source = ledger_spec(None, args['from_ledger_path'] or default_ledger_path())
        if not os.path.isfile(source):
            raise LedgerError(f'from_ledger_path {source} is not a ledger file: it does not exist or is not a file')
    else:
        source = from_url
    target = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])
    if target == source:
        raise LedgerError('the ledger to copy into is the ledger to copy from; set ledger_url or ledger_path to another one')
    return source, target


def _copied_result(copied: Copied, check_mode: bool, diff: bool) -> dict[str, t.Any]:
    changed = bool(copied.records or copied.entries)
    verb = 'would be copied' if check_mode else 'copied'
    result: dict[str, t.Any] = {
        'changed': changed,
        'records': copied.records,
        'entries': copied.entries,
        'alert_ids': list(copied.alert_ids),
        'msg': f'{copied.records} acknowledged alerts and {copied.entries} queued alerts {verb}' if changed
        else 'the target already knows everything the source holds; nothing copied',
    }
    if diff:
        result['diff'] = {
            'before_header': 'alerts the target ledger knows',
            'after_header': 'alerts the target ledger knows after the copy',
            'before': '',
            'after': ''.join(f'{alert_id}\n' for alert_id in copied.alert_ids),
        }
    return result
