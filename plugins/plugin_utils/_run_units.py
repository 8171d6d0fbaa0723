# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Bookkeeping of a playbook run for the playbook_alerts callback: which units failed, which recovered.

A unit is a play (per playbook), a host (per playbook) or a whole playbook, depending on the scope.
The callback feeds plain facts in (a host failed a task, a play ended); this module turns them into
alerts. It knows nothing of Ansible's objects, HTTP or SQL, so every rule here is unit-testable.
"""

from __future__ import annotations

import os
import typing as t

from ._alert import STATUS_ALARM, STATUS_OK, Alert, AlertValidationError, build_alert, derive_alert_id
from ._endpoint import mask_url_secrets

SCOPES = ('play', 'host', 'playbook')
DEFAULT_MAX_ERROR_CHARS = 300
NO_LOG_MESSAGE = '(output hidden by no_log)'
METRIC_NAME = 'ansible_failed_hosts'
# Well inside the alert model's per-field limit, and still readable on a phone.
MAX_DESCRIPTION_CHARS = 16000
MAX_HOST_LIST_CHARS = 4000


class HostFailure(t.NamedTuple):
    task: str
    message: str
    unreachable: bool = False


class PlayRun:
    """What happened in one play of one playbook during this run."""

    def __init__(self, playbook: str, index: int, name: str) -> None:
        self.playbook = playbook
        self.index = index
        self.name = name
        self.hosts: set[str] = set()
        self.failures: dict[str, list[HostFailure]] = {}
        self.completed = False
        # The play stopped before its end, for hosts unknown (no hosts remaining).
        self.cut_short = False
        # Hosts taken out of the play before its end without a failure of their own (meta end_host,
        # any_errors_fatal): they did not run it to its end, the other hosts may have.
        self.ended_early: set[str] = set()
        # Its hosts pattern named no host: an empty group, a template that resolved to nothing, --limit.
        self.matched_no_hosts = False
        # Routing: the integration each failed host named (temperstack_integration) in this play.
        self.routes: dict[str, str] = {}

    @property
    def label(self) -> str:
        return self.name or f'play #{self.index}'

    def host_failed(self, host: str) -> bool:
        return host in self.failures


class AlertSettings(t.NamedTuple):
    scope: str = 'play'
    alert_priority: str = 'Critical'
    alert_id_prefix: str = 'ansible'
    resource_type: str | None = None
    run_book_url: str | None = None
    alert_url: str | None = None
    max_error_chars: int = DEFAULT_MAX_ERROR_CHARS


class Unit(t.NamedTuple):
    """One alert's worth of a run: its identity and the plays that make it up."""

    alert_id: str
    kind: str
    playbook: str
    play: str | None
    host: str | None
    plays: tuple[PlayRun, ...]
    # Routing: the failed hosts this unit's alert is about (those of one integration); None for all of them.
    only: frozenset[str] | None = None

    @property
    def failed_hosts(self) -> dict[str, list[HostFailure]]:
        failed: dict[str, list[HostFailure]] = {}
        for play in self.plays:
            for host, failures in play.failures.items():
                if (self.host is None or host == self.host) and (self.only is None or host in self.only):
                    failed.setdefault(host, []).extend(failures)
        return failed

    def by_integration(self, default: str = 'default') -> dict[str, Unit]:
        """The unit's failures split by the integration of each failed host: one alert per integration, naming only
        its hosts. A host that failed in several plays of the unit goes by the integration it named in the last."""
        routes: dict[str, str] = {}
        for play in self.plays:
            for host in play.failures:
                if self.host is None or host == self.host:
                    routes[host] = play.routes.get(host, default)
        hosts_of: dict[str, set[str]] = {}
        for host, route in routes.items():
            hosts_of.setdefault(route, set()).add(host)
        return {route: self._replace(only=frozenset(hosts)) for route, hosts in sorted(hosts_of.items())}

    @property
    def ran_hosts(self) -> set[str]:
        hosts: set[str] = set()
        for play in self.plays:
            hosts |= play.hosts if self.host is None else (play.hosts & {self.host})
        return hosts

    @property
    def ran_to_end(self) -> bool:
        """Every play of the unit ran and ended, and took none of the unit's hosts out before its end.

        The unit's hosts are its own host under scope host, every host under scope play or playbook. A play that
        matched no hosts did not run, so a play or playbook unit that holds one did not run to its end.
        """
        for play in self.plays:
            if not play.completed or play.cut_short or play.matched_no_hosts:
                return False
            if play.ended_early if self.host is None else self.host in play.ended_early:
                return False
        return True


class RunBook:
    """The record of one ansible-playbook run, fed event by event."""

    def __init__(self) -> None:
        self.plays: list[PlayRun] = []
        self._indexes: dict[str, int] = {}

    @property
    def current(self) -> PlayRun | None:
        return self.plays[-1] if self.plays else None

    def start_play(self, playbook_path: str, name: str) -> PlayRun:
        """Begin a play; the previous one, if any, ran to its end."""
        self.end_play()
        playbook = os.path.basename(playbook_path or 'playbook')
        index = self._indexes.get(playbook, 0) + 1
        self._indexes[playbook] = index
        play = PlayRun(playbook, index, (name or '').strip())
        self.plays.append(play)
        return play

    def end_play(self) -> PlayRun | None:
        play = self.current
        if play is not None and not play.completed:
            play.completed = True
            return play
        return None

    def host_ran(self, host: str) -> None:
        if self.current is not None:
            self.current.hosts.add(host)

    def host_failed(self, host: str, task: str, message: str, unreachable: bool = False, route: str | None = None) -> None:
        if self.current is not None:
            self.current.hosts.add(host)
            self.current.failures.setdefault(host, []).append(HostFailure(task, message, unreachable))
            if route is not None:
                self.current.routes[host] = route

    def cut_short(self) -> None:
        """The current play stops before its end for hosts unknown (no hosts left)."""
        if self.current is not None:
            self.current.cut_short = True

    def ended_early(self, hosts: t.Iterable[str]) -> None:
        """``hosts`` were taken out of the current play before its end without a failure of their own."""
        if self.current is not None:
            self.current.ended_early.update(hosts)

    def no_hosts_matched(self) -> None:
        """The current play's hosts pattern named no host, so the play ran nothing."""
        if self.current is not None:
            self.current.matched_no_hosts = True

    def units(self, scope: str, prefix: str, plays: t.Iterable[PlayRun] | None = None) -> list[Unit]:
        """Group ``plays`` (all so far by default) into the units of ``scope``."""
        grouped: dict[str, list] = {}
        for play in self.plays if plays is None else plays:
            if scope == 'play':
                keys = [(play.playbook, play.label, None)]
            elif scope == 'host':
                # A host taken out before it ran a task of the play still did not run the play to its end.
                keys = [(play.playbook, None, host) for host in sorted(play.hosts | play.ended_early)]
            else:
                keys = [(play.playbook, None, None)]
            for playbook, play_label, host in keys:
                alert_id = unit_alert_id(prefix, scope, playbook, play_label, host)
                entry = grouped.setdefault(alert_id, [scope, playbook, play_label, host, []])
                entry[4].append(play)
        return [
            Unit(alert_id, kind, playbook, play_label, host, tuple(plays))
            for alert_id, (kind, playbook, play_label, host, plays) in grouped.items()
        ]


def unit_alert_id(prefix: str, scope: str, playbook: str, play: str | None, host: str | None) -> str:
    """Stable across runs and controllers: built only from names that are the same everywhere."""
    parts = [playbook] + [part for part in (play, host) if part is not None]
    return derive_alert_id(*parts, prefix=prefix or 'ansible', salt=f'playbook_alerts/{scope}')


def validate_settings(settings: AlertSettings) -> None:
    """Raise ``AlertValidationError`` for settings that would make every alert invalid."""
    if settings.scope not in SCOPES:
        raise AlertValidationError(f"scope must be one of {', '.join(SCOPES)}, got {settings.scope!r}")
    if isinstance(settings.max_error_chars, bool) or not isinstance(settings.max_error_chars, int) or settings.max_error_chars < 1:
        raise AlertValidationError(f'max_error_chars must be a whole number of at least 1, got {settings.max_error_chars!r}')
    ok_for(Unit(unit_alert_id(settings.alert_id_prefix, settings.scope, 'playbook', None, None), 'playbook',
                'playbook', None, None, ()), settings)


def alarm_for(unit: Unit, settings: AlertSettings) -> Alert:
    failed = unit.failed_hosts
    lines = []
    down = sorted(h for h, fs in failed.items() if any(f.unreachable for f in fs))
    broken = sorted(h for h in failed if h not in down)
    if broken:
        lines.append(_trim(f'Failed hosts ({len(broken)}): {", ".join(broken)}', MAX_HOST_LIST_CHARS))
    if down:
        lines.append(_trim(f'Unreachable hosts ({len(down)}): {", ".join(down)}', MAX_HOST_LIST_CHARS))
    details = [
        f"- {host}: task '{_trim(mask_url_secrets(failure.task), 200)}' {'unreachable' if failure.unreachable else 'failed'}: "
        + _trim(mask_url_secrets(failure.message), settings.max_error_chars)
        for host in sorted(failed)
        for failure in failed[host]
    ]
    # A failure storm must still make one valid alert: details stop at a bound, and say how many are left out.
    room = MAX_DESCRIPTION_CHARS - sum(len(line) + 1 for line in lines) - 60
    for index, line in enumerate(details):
        if len(line) + 1 > room:
            lines.append(f'... and {len(details) - index} more failures not shown')
            break
        lines.append(line)
        room -= len(line) + 1
    return _alert(unit, settings, STATUS_ALARM, '\n'.join(lines))


def ok_for(unit: Unit, settings: AlertSettings) -> Alert:
    where = f' on {unit.host}' if unit.host else ''
    return _alert(unit, settings, STATUS_OK, f'Recovered: ran to its end without failures{where}.')


def failed_hosts_of(unit: Unit) -> list[str]:
    return sorted(unit.failed_hosts)


def hosts_of_open_alarm(open_alarm_hosts: t.Iterable[str], failed_hosts: t.Iterable[str]) -> list[str]:
    """The hosts an Alarm names: those of the Alarm still open, and this run's failed hosts.

    They accumulate until the OK, so a narrower run (--limit) that fails again adds its hosts to the
    Alarm's and never replaces them: every one of them must run the unit again before an OK.
    """
    return sorted(set(open_alarm_hosts) | set(failed_hosts))


def recovered(unit: Unit, alarm_hosts: t.Iterable[str]) -> bool:
    """Whether ``unit`` may resolve its open Alarm, which names ``alarm_hosts``.

    An OK claims that every host named in the Alarm ran the unit again, to its end, and succeeded.
    Anything less is no OK: no host ran it, a host of the Alarm did not run it (--limit, an inventory
    change, a failure in an earlier play), or it was cut short.
    """
    ran = unit.ran_hosts
    return bool(ran) and not unit.failed_hosts and unit.ran_to_end and set(alarm_hosts) <= ran


def recovered_apart(unit: Unit, alarm_hosts: t.Iterable[str]) -> bool:
    """Whether the open Alarm of one integration, which names ``alarm_hosts``, may be resolved by ``unit``.

    With routing, a unit's failures are split by integration, and the OK rule holds for each alert on its own: every
    host of that Alarm ran the unit again, to its end, and succeeded; failures of hosts outside it are another
    integration's Alarm. The caller sends no OK where the unit also raises a new Alarm. With no failure at all in the
    unit this is ``recovered``.
    """
    ran = unit.ran_hosts
    hosts = set(alarm_hosts)
    return bool(ran) and unit.ran_to_end and hosts <= ran and not hosts & set(unit.failed_hosts)


def _alert(unit: Unit, settings: AlertSettings, status: str, description: str) -> Alert:
    if unit.kind == 'play':
        name = f"Ansible play '{unit.play}' failed ({unit.playbook})"
        resource_id, resource_name, resource_type = f'{unit.playbook}:{unit.play}', unit.play, 'ansible-play'
    elif unit.kind == 'host':
        name = f'Ansible playbook {unit.playbook} failed on {unit.host}'
        resource_id, resource_name, resource_type = unit.host, unit.host, 'host'
    else:
        name = f'Ansible playbook {unit.playbook} failed'
        resource_id, resource_name, resource_type = unit.playbook, unit.playbook, 'ansible-playbook'
    return build_alert({
        'alert_name': name,
        'status': status,
        'alert_priority': settings.alert_priority,
        'alert_id': unit.alert_id,
        'description': description,
        'alert_url': settings.alert_url,
        'metric_name': METRIC_NAME,
        'resource_id': resource_id,
        'resource_name': resource_name,
        'resource_type': settings.resource_type or resource_type,
        'run_book_url': settings.run_book_url,
    })


def _trim(text: str, limit: int) -> str:
    text = ' '.join(text.split())
    if limit > 0 and len(text) > limit:
        return text[: max(limit - 3, 0)] + '...'
    return text
