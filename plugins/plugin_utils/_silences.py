# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Maintenance windows: which silence, if any, withholds an Alarm; and the options that make one."""

from __future__ import annotations

import datetime
import re
import time
import typing as t

from ._alert import AlertValidationError
from ._globs import glob_matches
from ._ledger import Silence

# 1h30m, 45m, 2d, 90s, 1w: what operators type; an ISO 8601 duration (PT1H30M, P2D) too.
_SIMPLE_DURATION = re.compile(r'^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$')
_ISO_DURATION = re.compile(r'^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$')
_UNITS = (7 * 86400, 86400, 3600, 60, 1)
# A silence longer than this is a typo (or a way to turn alerting off, which the callback's own switch does better).
MAX_SILENCE_SECONDS = 366 * 86400


def parse_duration(value: t.Any, option: str = 'duration') -> float:
    """Seconds from ``2h``, ``1h30m``, ``45m``, ``90s``, ``1d``, ``1w`` or an ISO 8601 duration such as ``PT2H``."""
    text = str(value).strip()
    if isinstance(value, bool):
        text = ''
    elif isinstance(value, (int, float)):
        text = f'{int(value)}s' if value == int(value) else ''
    match = _SIMPLE_DURATION.match(text) or _ISO_DURATION.match(text.upper())
    seconds = sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS) if part) if match and text else 0
    if seconds <= 0:
        raise AlertValidationError(
            f'{option} must be a duration such as 2h, 1h30m, 45m, 90s, 1d or PT2H, longer than 0; got {value!r}'
        )
    if seconds > MAX_SILENCE_SECONDS:
        raise AlertValidationError(f'{option} must be at most 366 days; got {value!r}')
    return float(seconds)


def parse_time(value: t.Any, option: str) -> float:
    """A timestamp from ISO 8601 (``2026-12-01T22:00:00+01:00``); without an offset, the controller's local time."""
    text = str(value).strip()
    try:
        if isinstance(value, (int, float, bool)):
            raise ValueError
        # Python before 3.11 does not take a trailing Z.
        moment = datetime.datetime.fromisoformat(text[:-1] + '+00:00' if text.endswith(('Z', 'z')) else text)
    except ValueError:
        raise AlertValidationError(
            f'{option} must be a date and time in ISO 8601, such as 2026-12-01T22:00:00+01:00 or 2026-12-01 22:00; '
            f'got {value!r}'
        ) from None
    return moment.timestamp()


def iso(timestamp: float) -> str:
    """A timestamp as an operator reads it: ISO 8601, UTC, to the second."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).replace(microsecond=0).isoformat()


def build_silence(args: t.Mapping[str, t.Any], now: float | None = None) -> Silence:
    """A silence from the silence module's options, validated: the window, and at least one matcher."""
    now = time.time() if now is None else now
    name = _text(args.get('name'), 'name')
    alert_ids = _patterns(args.get('alert_id'), 'alert_id')
    resource_ids = _patterns(args.get('resource_id'), 'resource_id')
    hosts = _patterns(args.get('hosts'), 'hosts')
    if not (alert_ids or resource_ids or hosts):
        raise AlertValidationError(
            'a silence needs at least one of alert_id, resource_id or hosts: one that matched everything would '
            'withhold every Alarm'
        )
    starts = parse_time(args['starts'], 'starts') if args.get('starts') is not None else now
    if args.get('ends') is not None and args.get('duration') is not None:
        raise AlertValidationError('ends and duration are mutually exclusive: give one of them')
    if args.get('ends') is not None:
        ends = parse_time(args['ends'], 'ends')
    elif args.get('duration') is not None:
        ends = starts + parse_duration(args['duration'])
    else:
        raise AlertValidationError('a silence needs an end: give ends (ISO 8601) or duration (such as 2h)')
    if ends <= starts:
        raise AlertValidationError(f'ends ({iso(ends)}) must be after starts ({iso(starts)})')
    if ends <= now:
        raise AlertValidationError(f'ends ({iso(ends)}) is in the past: such a silence would withhold nothing')
    if ends - starts > MAX_SILENCE_SECONDS:
        raise AlertValidationError('a silence may last at most 366 days (from starts to ends)')
    # An empty comment is no comment: "{{ reason | default('') }}" must not fail the task.
    comment = '' if not args.get('comment') else _text(args['comment'], 'comment')
    return Silence(name, alert_ids, resource_ids, hosts, starts, ends, comment)


def describe_silence(silence: Silence, now: float | None = None) -> dict[str, t.Any]:
    """A silence as the modules return it."""
    return {
        'name': silence.name,
        'alert_id': list(silence.alert_ids),
        'resource_id': list(silence.resource_ids),
        'hosts': list(silence.hosts),
        'starts': iso(silence.starts),
        'ends': iso(silence.ends),
        'comment': silence.comment,
        'active': is_active(silence, now),
    }


def is_active(silence: Silence, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return silence.starts <= now < silence.ends


def matches(silence: Silence, alert_id: str, resource_id: str | None, hosts: t.Iterable[str]) -> bool:
    """Whether ``silence`` covers an alert: every kind of matcher it has matches (one of its patterns, each)."""
    if silence.alert_ids and not glob_matches(alert_id, silence.alert_ids):
        return False
    if silence.resource_ids and not (resource_id is not None and glob_matches(resource_id, silence.resource_ids)):
        return False
    return not silence.hosts or any(glob_matches(host, silence.hosts) for host in hosts)


def silencing(
    silences: t.Iterable[Silence], alert_id: str, resource_id: str | None, hosts: t.Iterable[str], now: float | None = None,
) -> Silence | None:
    """The first active silence, by name, that covers the alert; None if none does."""
    hosts = tuple(hosts)
    for silence in sorted(silences, key=lambda each: each.name):
        if is_active(silence, now) and matches(silence, alert_id, resource_id, hosts):
            return silence
    return None


def _patterns(value: t.Any, option: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise AlertValidationError(f'{option} must be a list of glob patterns, such as ["db-*"]; got {value!r}')
    return tuple(sorted({_text(item, option) for item in items}))


def _text(value: t.Any, option: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AlertValidationError(f'{option} must be a non-empty string; got {value!r}')
    return value.strip()
