# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The temperstack.alerting.silence module, run on the controller: maintenance windows kept in the ledger."""

from __future__ import annotations

import time
import typing as t

from ansible.module_utils.common.parameters import env_fallback
from ansible.plugins.action import ActionBase

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._globs import glob_matches, is_glob
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Ledger,
    LedgerError,
    Silence,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import keep_silences_for_outage, open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    fallback_path,
    is_url,
    ledger_spec,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._silences import build_silence, describe_silence, matches

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'default': 'present', 'choices': ['present', 'absent']},
    'alert_id': {'type': 'list', 'elements': 'str'},
    'resource_id': {'type': 'list', 'elements': 'str'},
    'hosts': {'type': 'list', 'elements': 'str'},
    'starts': {'type': 'str'},
    'ends': {'type': 'str'},
    'duration': {'type': 'str'},
    'comment': {'type': 'str'},
    'ledger_path': {'type': 'path'},
    'ledger_url': {'type': 'str', 'no_log': True, 'fallback': (env_fallback, ['TEMPERSTACK_LEDGER_URL'])},
}
MUTUALLY_EXCLUSIVE = [('ends', 'duration')]


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
            # Everything is validated before the ledger is opened.
            wanted = build_silence(args) if args['state'] == 'present' else None
            spec = ledger_spec(check_ledger_url(args['ledger_url']), args['ledger_path'])
            with open_ledger(spec, read_only=check_mode) as ledger:
                if wanted is not None:
                    fixed_window = args['starts'] is not None or args['ends'] is not None
                    result.update(_present(ledger, wanted, fixed_window, check_mode))
                else:
                    result.update(_absent(ledger, args['name'], check_mode))
                if is_url(spec) and result['changed'] and not check_mode:
                    # Silences hold during an outage of the shared ledger only as this controller last knew them.
                    keep_silences_for_outage(fallback_path(args['ledger_path']), ledger.silences())
        except (AlertValidationError, LedgerError) as exc:
            result.update(failed=True, msg=str(exc))
            return result
        if self._task.diff:
            result['diff'] = result.pop('_diff')
        else:
            result.pop('_diff')
        return result


def _present(ledger: Ledger, wanted: Silence, fixed_window: bool, check_mode: bool) -> dict[str, t.Any]:
    before = next((silence for silence in ledger.silences() if silence.name == wanted.name), None)
    changed = before is None or not _same(before, wanted, fixed_window)
    if not changed:
        # Stated again, a silence of "duration 2h from now" keeps the window it got the first time.
        wanted = t.cast(Silence, before)
    if changed and not check_mode:
        ledger.put_silence(wanted)
    verb = ('would be ' if check_mode else '') + ('created' if before is None else 'updated')
    return {
        'changed': changed,
        'silence': describe_silence(wanted),
        'matches': _matching_alerts(ledger, wanted),
        'msg': f'silence {wanted.name} {verb}' if changed else f'silence {wanted.name} is already as stated',
        '_diff': {'before': describe_silence(before) if before else {}, 'after': describe_silence(wanted)},
    }


def _absent(ledger: Ledger, name: str, check_mode: bool) -> dict[str, t.Any]:
    existing = ledger.silences()
    if is_glob(name):
        gone = [silence for silence in existing if glob_matches(silence.name, (name,))]
        if not gone:
            known = ', '.join(silence.name for silence in existing) or 'none'
            raise AlertValidationError(f'name {name!r} matches no silence (there are: {known})')
    else:
        gone = [silence for silence in existing if silence.name == name]
    if not check_mode:
        for silence in gone:
            ledger.remove_silence(silence.name)
    names = [silence.name for silence in gone]
    return {
        'changed': bool(gone),
        'removed': names,
        'matches': sorted({alert_id for silence in gone for alert_id in _matching_alerts(ledger, silence)}),
        'msg': (f"silence {', '.join(names)} {'would be ' if check_mode else ''}removed" if gone
                else f'there is no silence {name}'),
        '_diff': {'before': {silence.name: describe_silence(silence) for silence in gone}, 'after': {}},
    }


def _same(before: Silence, wanted: Silence, fixed_window: bool) -> bool:
    if before._replace(starts=0, ends=0, created=0) != wanted._replace(starts=0, ends=0, created=0):
        return False
    if fixed_window:
        return abs(before.starts - wanted.starts) < 1 and abs(before.ends - wanted.ends) < 1
    # Only a duration, from now: the same length, still running, is the same silence.
    return abs((before.ends - before.starts) - (wanted.ends - wanted.starts)) < 1 and before.ends > time.time()


def _matching_alerts(ledger: Ledger, silence: Silence) -> list[str]:
    """The alert ids the ledger knows (records, queued or withheld) that the silence would cover."""
    known = [record for _endpoint, _seq, record in ledger.export()]
    known += [withheld.record for withheld in ledger.withheld(None)]
    return sorted({
        record.alert_id for record in known if matches(silence, record.alert_id, record.payload.get('resource_id'), record.hosts)
    })
