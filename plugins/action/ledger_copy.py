# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.ledger_copy module, run on the controller: one ledger's memory into another."""

from __future__ import annotations

import os
import typing as t

from ansible.module_utils.common.parameters import env_fallback
from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Copied,
    LedgerError,
    check_ledger_url,
    copy_ledger,
    default_ledger_path,
    ledger_spec,
    open_ledger,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    'from_ledger_path': {'type': 'path'},
    'from_ledger_url': {'type': 'str', 'no_log': True},
    'ledger_url': {'type': 'str', 'no_log': True, 'fallback': (env_fallback, ['TEMPERSTACK_LEDGER_URL'])},
    'ledger_path': {'type': 'path'},
}
MUTUALLY_EXCLUSIVE = [('from_ledger_path', 'from_ledger_url')]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=MUTUALLY_EXCLUSIVE)
        try:
            source_spec, target_spec = _specs(args)
            check_mode = bool(self._task.check_mode)
            with open_ledger(source_spec, read_only=True) as source, open_ledger(target_spec, read_only=check_mode) as target:
                copied = copy_ledger(source, target, dry_run=check_mode)
                result.update(source=source.location, target=target.location)
        except LedgerError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(_copied_result(copied, check_mode, diff=self._task.diff))
        return result


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
