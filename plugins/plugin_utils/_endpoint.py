# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Where alerts go: resolving the connection options into one webhook URL, and keeping its key hidden."""

from __future__ import annotations

import hashlib
import os
import re
import typing as t
from urllib.parse import quote, urlsplit, urlunsplit

CONNECTION_OPTIONS = ('webhook_url', 'api_key', 'org', 'base_url')
ENV_VARS = {
    'webhook_url': 'TEMPERSTACK_WEBHOOK_URL',
    'api_key': 'TEMPERSTACK_API_KEY',
    'org': 'TEMPERSTACK_ORG',
    'base_url': 'TEMPERSTACK_BASE_URL',
}
WEBHOOK_PATH = '/api/integration/webhook/'
MASK = '********'
# Secrets shorter than this are masked only where they stand alone (see Endpoint.mask).
SHORT_SECRET = 8
# The words of WEBHOOK_PATH: shown in an error message's URL, where any other path segment might be a key.
_WEBHOOK_PATH_WORDS = frozenset(WEBHOOK_PATH.strip('/').split('/'))

_ORG_NAME = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
_HOW_TO_CONNECT = (
    'give either webhook_url (TEMPERSTACK_WEBHOOK_URL), or api_key (TEMPERSTACK_API_KEY) '
    'together with org (TEMPERSTACK_ORG) or base_url (TEMPERSTACK_BASE_URL)'
)
# userinfo in any URL, and the key segment of a webhook URL, wherever they appear in free text.
_URL_USERINFO = re.compile(r'(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/\s@]+@')
_WEBHOOK_KEY_IN_TEXT = re.compile(re.escape(WEBHOOK_PATH) + r'[^/?#\s"\'<>]+')


class EndpointError(ValueError):
    """The connection options do not describe exactly one Temperstack endpoint."""


class IntegrationNotConfigured(EndpointError):
    """An integration is named, but the environment gives it no URL or key."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.variable = integration_variables(name)[0]
        super().__init__(
            f'integration {name!r} has no endpoint: set {self.variable} '
            f'(or {integration_variables(name)[1]} with org or base_url)'
        )


class Endpoint:
    """A resolved Temperstack webhook: the URL (secret), its masked form, and its ledger identity.

    ``integration`` is the name it was chosen by (``default`` for the connection options and their variables), for
    display only: the ledger knows an endpoint by its hash, so controllers that name it differently share its alerts.
    """

    __slots__ = ('url', 'secrets', 'masked_url', 'ledger_key', 'integration')

    def __init__(self, url: str, secrets: t.Iterable[str], integration: str = 'default') -> None:
        self.integration = integration
        self.url = url
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self.masked_url = self.mask(url)
        # A one-way digest: the ledger can tell endpoints apart without ever holding a key.
        self.ledger_key = hashlib.sha256(b'temperstack.alerting endpoint\0' + url.encode('utf-8')).hexdigest()

    def mask(self, text: str) -> str:
        """Hide this endpoint's key (and any URL credentials) in ``text``.

        A key of ``SHORT_SECRET`` characters or more is hidden wherever it appears. A shorter one is hidden only where
        it stands alone (no letter or digit on either side) and as the key segment of any webhook URL, so that a key
        ``k`` does not turn "unknown key" into "un********nown ********ey".
        """
        for secret in self.secrets:
            for form in dict.fromkeys((secret, quote(secret, safe=''))):
                if len(form) >= SHORT_SECRET:
                    text = text.replace(form, MASK)
                else:
                    text = re.sub(rf'(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])', MASK, text)
        return mask_url_secrets(text)

    def __repr__(self) -> str:
        return f'Endpoint({self.masked_url!r})'


DEFAULT_INTEGRATION = 'default'
# The integration name that means: alert nowhere.
NO_INTEGRATION = 'none'
INTEGRATION_VARIABLE = 'temperstack_integration'
_NOT_A_NAME_CHAR = re.compile(r'[^A-Z0-9]')
_NAMED_VARIABLE = re.compile(r'^TEMPERSTACK_(?:WEBHOOK_URL|API_KEY)_(?P<suffix>.+)$')


def integration_suffix(name: str) -> str:
    """The part of the variable names of integration ``name``: upper-cased, every other character than A-Z and 0-9
    turned into ``_`` (``payments-eu`` -> ``PAYMENTS_EU``)."""
    return _NOT_A_NAME_CHAR.sub('_', name.strip().upper())


def integration_variables(name: str) -> tuple[str, str]:
    """The environment variables that give integration ``name`` its endpoint: the webhook URL's, the key's."""
    suffix = integration_suffix(name)
    return f"{ENV_VARS['webhook_url']}_{suffix}", f"{ENV_VARS['api_key']}_{suffix}"


def integration_name(value: t.Any) -> str:
    """A ``temperstack_integration`` value as a name: ``default`` when unset or empty, ``none`` for any case of it."""
    if value is None:
        return DEFAULT_INTEGRATION
    if not isinstance(value, str):
        raise EndpointError(f'{INTEGRATION_VARIABLE} must be a string, got {type(value).__name__}')
    name = value.strip()
    if not name or name.lower() == DEFAULT_INTEGRATION:
        return DEFAULT_INTEGRATION
    if name.lower() == NO_INTEGRATION:
        return NO_INTEGRATION
    if not integration_suffix(name).strip('_'):
        raise EndpointError(
            f'{INTEGRATION_VARIABLE} must name an integration with at least one letter or digit, got {name!r}'
        )
    return name


def configured_integrations(environ: t.Mapping[str, str] | None = None) -> list[str]:
    """The integrations the environment gives an endpoint to, by their variables' suffix in lower case, sorted."""
    environ = os.environ if environ is None else environ
    names = set()
    for variable, value in environ.items():
        match = _NAMED_VARIABLE.match(variable)
        if match and value.strip() and match.group('suffix').strip('_'):
            name = match.group('suffix').lower()
            if name not in (DEFAULT_INTEGRATION, NO_INTEGRATION):
                names.add(name)
    return sorted(names)


def resolve_integration(
    name: t.Any, options: t.Mapping[str, t.Any] | None = None, environ: t.Mapping[str, str] | None = None
) -> Endpoint | None:
    """The endpoint of integration ``name``; None for ``none``.

    No name (or ``default``) is the endpoint the connection options and their variables describe. Any other name
    is ``TEMPERSTACK_WEBHOOK_URL_<NAME>``, or ``TEMPERSTACK_API_KEY_<NAME>`` with the usual org or base_url (from
    ``options`` or the environment). An integration the environment gives nothing raises IntegrationNotConfigured.
    """
    environ = os.environ if environ is None else environ
    options = options or {}
    name = integration_name(name)
    if name == NO_INTEGRATION:
        return None
    if name == DEFAULT_INTEGRATION:
        return resolve_endpoint(options, environ)
    for option in ('webhook_url', 'api_key'):
        if _text(options.get(option)):
            raise EndpointError(
                f'integration and {option} are mutually exclusive: integration {name!r} takes its endpoint from '
                f'{" or ".join(integration_variables(name))}'
            )
    url_variable, key_variable = integration_variables(name)
    url, key = environ.get(url_variable, '').strip(), environ.get(key_variable, '').strip()
    if not url and not key:
        raise IntegrationNotConfigured(name)
    if url and key:
        raise EndpointError(f'{url_variable} and {key_variable} are mutually exclusive (both set for integration {name!r})')
    try:
        if url:
            endpoint = _from_webhook_url(url)
        else:
            origin = {k: _text(options.get(k)) for k in ('org', 'base_url') if _text(options.get(k))}
            if not origin:
                origin = {k: environ.get(ENV_VARS[k], '').strip() for k in ('org', 'base_url')}
                origin = {k: v for k, v in origin.items() if v}
            _reject_conflicts(origin, source='options and environment')
            if not origin:
                raise EndpointError(f'{key_variable} given without org or base_url: {_HOW_TO_CONNECT}')
            endpoint = _from_api_key(key, org=origin.get('org'), base_url=origin.get('base_url'))
    except EndpointError as exc:
        raise EndpointError(f'integration {name!r} ({url_variable if url else key_variable}): {exc}') from None
    endpoint.integration = name
    return endpoint


def resolve_integrations(options: t.Mapping[str, t.Any], environ: t.Mapping[str, str] | None = None) -> list[Endpoint]:
    """The endpoints a listing covers: that of the ``integration`` option alone, or without it the default endpoint
    (if one is configured) and every integration the environment gives an endpoint to."""
    environ = os.environ if environ is None else environ
    if _text(options.get('integration')):
        endpoint = resolve_integration(options['integration'], options, environ)
        if endpoint is None:
            raise EndpointError(f'integration {NO_INTEGRATION!r} alerts nowhere: it has no endpoint and no alerts')
        return [endpoint]
    named = [name for name in configured_integrations(environ) if name not in (DEFAULT_INTEGRATION, NO_INTEGRATION)]
    endpoints = []
    try:
        endpoints.append(resolve_endpoint(options, environ))
    except EndpointError:
        configured = any(_text(options.get(name)) for name in CONNECTION_OPTIONS) or any(
            environ.get(variable, '').strip() for variable in ENV_VARS.values())
        if configured or not named:
            raise
    origin = {name: options[name] for name in ('org', 'base_url') if _text(options.get(name))}
    for name in named:
        endpoint = resolve_integration(name, origin, environ)
        if endpoint is not None and all(endpoint.ledger_key != other.ledger_key for other in endpoints):
            endpoints.append(endpoint)
    return endpoints


def mask_url_secrets(text: str) -> str:
    """Hide credentials embedded in URLs and webhook keys anywhere in free text."""
    text = _URL_USERINFO.sub(lambda m: f'{m.group("scheme")}{MASK}@', text)
    return _WEBHOOK_KEY_IN_TEXT.sub(WEBHOOK_PATH + MASK, text)


def resolve_endpoint(
    options: t.Mapping[str, t.Any], environ: t.Mapping[str, str] | None = None
) -> Endpoint:
    """Turn the connection options into one endpoint.

    Options given explicitly decide which way of connecting is meant; the environment only fills in
    what they leave out (an ``org`` in the play with the key from ``TEMPERSTACK_API_KEY`` is common).
    When nothing is explicit, the environment alone must describe exactly one way.
    """
    environ = os.environ if environ is None else environ
    explicit = {name: _text(options.get(name)) for name in CONNECTION_OPTIONS}
    explicit = {name: value for name, value in explicit.items() if value}
    from_env = {name: environ.get(var, '').strip() for name, var in ENV_VARS.items()}
    from_env = {name: value for name, value in from_env.items() if value}

    _reject_conflicts(explicit, source='options')
    if 'webhook_url' in explicit:
        chosen = explicit
    elif explicit:
        chosen = dict(explicit)
        if 'api_key' not in chosen and 'api_key' in from_env:
            chosen['api_key'] = from_env['api_key']
        if 'org' not in chosen and 'base_url' not in chosen:
            chosen.update({k: from_env[k] for k in ('org', 'base_url') if k in from_env})
        _reject_conflicts(chosen, source='options and environment')
    else:
        chosen = from_env
        _reject_conflicts(chosen, source='environment')

    for name, value in chosen.items():
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            # Undecodable bytes (from a variable or the environment) cannot be part of a URL; quote() would crash.
            raise EndpointError(f'{name} contains bytes that are not valid UTF-8 text') from None
    if 'webhook_url' in chosen:
        return _from_webhook_url(chosen['webhook_url'])
    if 'api_key' not in chosen:
        if chosen:
            raise EndpointError(
                f"{' and '.join(sorted(chosen))} given without api_key: {_HOW_TO_CONNECT}"
            )
        raise EndpointError(f'no Temperstack endpoint is configured: {_HOW_TO_CONNECT}')
    if 'org' not in chosen and 'base_url' not in chosen:
        raise EndpointError(f'api_key given without org or base_url: {_HOW_TO_CONNECT}')
    return _from_api_key(chosen['api_key'], org=chosen.get('org'), base_url=chosen.get('base_url'))


def _text(value: t.Any) -> str:
    if value is None:
        return ''
    if not isinstance(value, str):
        raise EndpointError(f'connection options must be strings, got {type(value).__name__}')
    return value.strip()


def _reject_conflicts(chosen: t.Mapping[str, str], source: str) -> None:
    if 'webhook_url' in chosen and len(chosen) > 1:
        others = ', '.join(sorted(set(chosen) - {'webhook_url'}))
        raise EndpointError(
            f'webhook_url and {others} are mutually exclusive (both set in {source}): {_HOW_TO_CONNECT}'
        )
    if 'org' in chosen and 'base_url' in chosen:
        raise EndpointError(
            f'org and base_url are mutually exclusive (both set in {source}): {_HOW_TO_CONNECT}'
        )


def _from_webhook_url(url: str) -> Endpoint:
    parts = _split_http_url('webhook_url', url)
    path = parts.path
    key = path[len(WEBHOOK_PATH):] if path.startswith(WEBHOOK_PATH) else ''
    if not key or '/' in key.strip('/'):
        raise EndpointError(
            'webhook_url must be the integration URL Temperstack shows, '
            f'https://ORG.temperstack.com{WEBHOOK_PATH}KEY, got {shown_url(url)}'
        )
    secrets = [key.strip('/'), parts.query, parts.password or '']
    return Endpoint(url, secrets)


def _from_api_key(api_key: str, org: str | None, base_url: str | None) -> Endpoint:
    if any(ch.isspace() for ch in api_key) or '/' in api_key:
        raise EndpointError('api_key must be the integration key alone, without spaces or slashes')
    if org is not None:
        if not _ORG_NAME.match(org):
            raise EndpointError(
                f'org must be the organisation name in https://ORG.temperstack.com '
                f'(letters, digits and hyphens), got {org!r}'
            )
        origin = f'https://{org.lower()}.temperstack.com'
    else:
        parts = _split_http_url('base_url', t.cast(str, base_url))
        if parts.query or parts.fragment:
            raise EndpointError('base_url must not have a query or fragment')
        origin = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip('/'), '', ''))
    return Endpoint(f'{origin}{WEBHOOK_PATH}{quote(api_key, safe="")}', [api_key])


def _split_http_url(option: str, url: str):
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise EndpointError(f'{option} is not a valid URL') from None
    if parts.scheme.lower() not in ('http', 'https') or not parts.hostname:
        raise EndpointError(f'{option} must be an http:// or https:// URL, got {shown_url(url)}')
    return parts


def shown_url(url: str) -> str:
    """A URL fit for an error message: its scheme, host and path shown, so that the user can see what is wrong with it.

    Hidden: the key segment after the webhook path, any user and password, the query and the fragment. In a path
    that is not the webhook path, where the key cannot be told apart, every segment but the webhook path's own words
    is hidden. A URL without a scheme (``acme.temperstack.com/api/...``) is shown with its host too.
    """
    if '//' in url:
        parts = urlsplit(url)
        scheme = f'{parts.scheme}://' if parts.scheme else '//'
    else:
        parts = urlsplit('//' + url)
        scheme = ''
    netloc = parts.netloc
    if '@' in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    path = parts.path
    if WEBHOOK_PATH in path:
        head, _sep, tail = path.partition(WEBHOOK_PATH)
        key, slash, rest = tail.partition('/')
        path = f"{head}{WEBHOOK_PATH}{MASK if key else ''}{slash}{rest}"
    else:
        path = '/'.join(
            segment if not segment or segment in _WEBHOOK_PATH_WORDS else MASK for segment in path.split('/')
        )
    shown = f'{scheme}{netloc}{path}'
    if parts.query:
        shown += f'?{MASK}'
    if parts.fragment:
        shown += f'#{MASK}'
    return mask_url_secrets(shown)
