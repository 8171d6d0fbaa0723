# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Routing for the playbook_alerts callback: which integration (endpoint) each failed host's alerts go to.

A host names its integration with the variable ``temperstack_integration``, resolved as Ansible resolves it for that
host in that play; each integration's endpoint comes from ``TEMPERSTACK_WEBHOOK_URL_<NAME>`` (see ``_endpoint``). A
unit's failures are split by integration, one alert each. An integration without an endpoint is never a silent drop:
its alerts go to the default endpoint with one warning per run, or, with none, a warning says they were not sent.
"""

from __future__ import annotations

import os
import typing as t

from ._endpoint import (
    DEFAULT_INTEGRATION,
    ENV_VARS,
    INTEGRATION_VARIABLE,
    NO_INTEGRATION,
    Endpoint,
    EndpointError,
    configured_integrations,
    integration_name,
    integration_suffix,
    integration_variables,
    resolve_integration,
)


class Router:
    """The endpoints a run can alert, by integration, and the integration of each failed host in each play."""

    def __init__(self, warn: t.Callable[[str], None]) -> None:
        self._warn = warn
        # By DEFAULT_INTEGRATION, or a name's suffix (integration_suffix).
        self.endpoints: dict[str, Endpoint] = {}
        # Integrations named in the environment whose variables do not describe an endpoint: why not.
        self.broken: dict[str, str] = {}
        # The integration of hosts that do not set temperstack_integration (the callback's option integration).
        self.unnamed = DEFAULT_INTEGRATION
        self._routes: dict[tuple[t.Any, str], str] = {}
        self._warned: set[t.Any] = set()

    def configure(
        self, default: Endpoint | None, origin: t.Mapping[str, t.Any], unnamed: t.Any,
        environ: t.Mapping[str, str] | None = None,
    ) -> None:
        """Resolve every integration the environment names; ``origin`` is the callback's org or base_url."""
        environ = os.environ if environ is None else environ
        self.unnamed = integration_name(unnamed)
        self.endpoints = {DEFAULT_INTEGRATION: default} if default is not None else {}
        for name in configured_integrations(environ):
            try:
                resolved = resolve_integration(name, origin, environ)
            except EndpointError as exc:
                self.broken[integration_suffix(name)] = str(exc)
                continue
            if resolved is not None:
                self.endpoints[integration_suffix(name)] = resolved
        if not self.endpoints:
            raise EndpointError('no integration has a valid endpoint: ' + '; '.join(self.broken.values()))

    def keys(self) -> list[str]:
        """The ledger keys of every endpoint this run can alert."""
        return [endpoint.ledger_key for endpoint in self.endpoints.values()]

    def route_of(self, play: t.Any, host: t.Any, loader: t.Any) -> str:
        """The integration ``host`` names in ``play``: ``temperstack_integration`` as Ansible resolves it for that host
        (extra vars, then play vars, then host_vars, then group_vars ...), templated.

        Asked only for hosts that failed, once per play and host: a green run resolves nothing.
        """
        cache_key = (getattr(play, '_uuid', None), host.get_name())
        route = self._routes.get(cache_key)
        if route is None:
            route = self._routes[cache_key] = self._resolve(play, host, loader)
        return route

    def _resolve(self, play: t.Any, host: t.Any, loader: t.Any) -> str:
        get_variable_manager = getattr(play, 'get_variable_manager', None)
        if get_variable_manager is None:
            return self.unnamed
        try:
            variables = get_variable_manager().get_vars(play=play, host=host)
            value = variables.get(INTEGRATION_VARIABLE)
            if isinstance(value, str) and ('{{' in value or '{%' in value):
                from ansible.template import Templar  # pylint: disable=import-outside-toplevel
                value = Templar(loader=loader, variables=variables).template(value)
            if value is None or (isinstance(value, str) and not value.strip()):
                return self.unnamed
            return integration_name(value)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # An undefined variable in its template, a value that names nothing: still never a silent drop.
            self._warn_once(
                ('bad', host.get_name()),
                f'temperstack: {INTEGRATION_VARIABLE} of host {host.get_name()} could not be resolved '
                f'({self.mask(str(exc))}); its alerts go to the default endpoint',
            )
            return DEFAULT_INTEGRATION

    def mask(self, text: str) -> str:
        for endpoint in self.endpoints.values():
            text = endpoint.mask(text)
        return text

    def routed(self, unit: t.Any, announce: bool = True) -> list[tuple[Endpoint, t.Any]]:
        """The unit's failures split by integration, each with the endpoint its alert goes to.

        Two names that reach the same endpoint (one falls back to the default) make one alert there, naming the hosts
        of both. ``none`` alerts nowhere. With ``announce``, a fallback or an alert not sent is warned about.
        """
        routed: dict[str, tuple[Endpoint, t.Any]] = {}
        for route, part in unit.by_integration(DEFAULT_INTEGRATION).items():
            endpoint = self._endpoint_of(route, part.alert_id, announce)
            if endpoint is None:
                continue
            if endpoint.ledger_key in routed:
                part = part._replace(only=routed[endpoint.ledger_key][1].only | part.only)
            routed[endpoint.ledger_key] = (endpoint, part)
        return list(routed.values())

    def _endpoint_of(self, route: str, alert_id: str, announce: bool) -> Endpoint | None:
        if route == NO_INTEGRATION:
            return None
        suffix = DEFAULT_INTEGRATION if route == DEFAULT_INTEGRATION else integration_suffix(route)
        endpoint = self.endpoints.get(suffix)
        if endpoint is not None:
            return endpoint
        default = self.endpoints.get(DEFAULT_INTEGRATION)
        if not announce:
            return default
        if route == DEFAULT_INTEGRATION:
            self._warn_once(
                ('no default', alert_id),
                f'temperstack: the Alarm of {alert_id} was not sent: its hosts name no integration '
                f'({INTEGRATION_VARIABLE}) and there is no default endpoint ({ENV_VARS["webhook_url"]})',
            )
            return None
        variable = integration_variables(route)[0]
        why = self.broken.get(suffix) or f'{variable} is not set'
        if default is None:
            self._warn_once(
                ('not sent', route, alert_id),
                f'temperstack: the Alarm of {alert_id} was not sent: integration {route} ({INTEGRATION_VARIABLE}) has '
                f'no endpoint ({why}) and there is no default endpoint either',
            )
        else:
            self._warn_once(
                ('fallback', suffix),
                f'temperstack: integration {route} ({INTEGRATION_VARIABLE}) has no endpoint ({why}): its alerts go to '
                f'the default endpoint; set {variable} to route them',
            )
        return default

    def _warn_once(self, key: t.Any, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)
