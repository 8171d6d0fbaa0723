# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Event source temperstack.alerting.webhook: Temperstack's alerts as events, authenticated, bounded, deduplicated."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import pathlib
import ssl
import sys
import typing as t

from aiohttp import web

DOCUMENTATION = r"""
---
short_description: Receive Temperstack alerts over HTTP(S), authenticated
description:
  - An ansible-rulebook event source. It accepts a JSON object by C(POST) on any path and puts it on the queue as
    C(payload), with C(meta.endpoint) (the path) and C(meta.headers) (without C(Authorization), cookies or the
    signature header), and with C(temperstack) and C(meta.hosts) as the filter C(temperstack.alerting.normalize)
    builds them (its options are accepted here).
  - It refuses to start without O(token) or O(hmac_secret), unless O(allow_unauthenticated=true).
  - Answers C(GET /healthz) with 200 without authentication; another method 405; a wrong or missing token or
    signature 401 without detail; a body over O(max_body_bytes) 413; a body that is not a JSON object 400;
    otherwise 200, once the event is queued.
  - A delivery identical to the last one of the same C(alert_id) within O(dedup_seconds) is answered 200 and dropped.
options:
  host:
    description: The address to listen on.
    type: str
    default: 0.0.0.0
  port:
    description: The TCP port to listen on.
    type: int
    required: true
  token:
    description: The token that each request must carry as C(Authorization: Bearer TOKEN). Compared in constant time.
    type: str
  hmac_secret:
    description: The secret of an HMAC over each request's body, which the request carries in O(hmac_header).
    type: str
  hmac_header:
    description: The header that carries the signature.
    type: str
    default: X-Temperstack-Signature
  hmac_algo:
    description: The hash of the HMAC, any of Python's C(hashlib.algorithms_available).
    type: str
    default: sha256
  hmac_format:
    description: How the signature is written; a prefix C(ALGO=), such as C(sha256=), is accepted.
    type: str
    choices: [hex, base64]
    default: hex
  certfile:
    description: The server's certificate chain (PEM); with it, the source speaks HTTPS only.
    type: str
  keyfile:
    description: The certificate's private key, if not in O(certfile).
    type: str
  cafile:
    description: CA certificates that clients' certificates must be signed by (mutual TLS); needs O(certfile).
    type: str
  max_body_bytes:
    description: The largest body accepted.
    type: int
    default: 1048576
  dedup_seconds:
    description: How long an identical delivery of the same alert counts as a duplicate; 0 keeps every delivery.
    type: float
    default: 300
  allow_unauthenticated:
    description: Start without O(token) and O(hmac_secret). Only behind something else that authenticates.
    type: bool
    default: false
  hosts_from:
    description: As for the filter C(temperstack.alerting.normalize); so are C(field_map), C(ledger_path),
      C(ledger_url), C(webhook_url), C(api_key), C(org) and C(base_url).
    type: str
    default: ledger
"""

EXAMPLES = r"""
- name: Remediate Temperstack alerts
  hosts: all
  sources:
    - temperstack.alerting.webhook:
        port: 5000
        token: "{{ temperstack_webhook_token }}"
        certfile: /etc/eda/tls/server.pem
        keyfile: /etc/eda/tls/server.key
  rules:
    - name: Remediate
      condition: event.temperstack.status == "Alarm"
      action:
        run_playbook:
          name: remediate.yml
"""

NAME = 'temperstack.alerting.webhook'
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_DEDUP_SECONDS = 300.0
DEFAULT_HMAC_HEADER = 'X-Temperstack-Signature'
SOURCE_OPTIONS = (
    'host', 'port', 'token', 'hmac_secret', 'hmac_header', 'hmac_algo', 'hmac_format', 'certfile', 'keyfile', 'cafile',
    'max_body_bytes', 'dedup_seconds', 'allow_unauthenticated',
)
UNAUTHENTICATED_MESSAGE = (
    f'{NAME}: refusing to start without authentication: set token (requests then carry Authorization: Bearer '
    'TOKEN), hmac_secret (requests then carry a signature of their body), or both; or set allow_unauthenticated: '
    'true to accept requests from anyone who can reach the port'
)
_BOOLEANS = {'true': True, 'yes': True, 'on': True, '1': True, 'false': False, 'no': False, 'off': False, '0': False, '': False}
# Never put into an event, never logged.
_SECRET_HEADERS = frozenset(('authorization', 'proxy-authorization', 'cookie', 'x-hub-signature', 'x-hub-signature-256'))

# Named, not __name__: ansible-rulebook runs this file by path, as a module called <run_path>.
logger = logging.getLogger('temperstack.alerting.webhook')


def _plugin_utils() -> t.Any:
    """The collection's shared EDA code; ansible-rulebook runs this file by path, so find the collection from it."""
    try:
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.temperstack.alerting.plugins.plugin_utils import _eda
    except ImportError:
        here = pathlib.Path(globals().get('__file__', '')).resolve()
        if len(here.parents) < 8 or here.parents[6].name != 'ansible_collections':
            raise
        sys.path.append(str(here.parents[7]))
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.temperstack.alerting.plugins.plugin_utils import _eda
    return _eda


class Settings(t.NamedTuple):
    host: str
    port: int
    token: bytes | None
    hmac_secret: bytes | None
    hmac_header: str
    hmac_algo: str
    hmac_format: str
    max_body_bytes: int
    dedup_seconds: float
    filter_options: dict[str, t.Any]


def _number(args: t.Mapping[str, t.Any], name: str, default: float, kind: type, minimum: float) -> t.Any:
    value = args.get(name, default)
    if value is None:
        value = default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f'{NAME}: {name} must be a number, got {value!r}') from None
    if number < minimum:
        raise ValueError(f'{NAME}: {name} must be at least {minimum}, got {value!r}')
    return number


def _secret(args: t.Mapping[str, t.Any], name: str) -> bytes | None:
    value = args.get(name)
    if value is None or value == '':
        # Empty is unset (a rulebook variable that the activation left empty): no authentication from it.
        return None
    if not isinstance(value, str):
        raise ValueError(f'{NAME}: {name} must be a string')
    return value.encode('utf-8')


def settings_from(args: t.Mapping[str, t.Any]) -> Settings:
    """The source's arguments, checked; a ValueError names the argument at fault (and never shows a secret)."""
    eda = _plugin_utils()
    own = {name: value for name, value in args.items() if name in SOURCE_OPTIONS}
    try:
        filter_options = eda.filter_options({k: v for k, v in args.items() if k not in SOURCE_OPTIONS})
    except eda.EventOptionError as exc:
        raise ValueError(str(exc).replace(eda.NAME, NAME)) from None
    if 'port' not in own or own['port'] is None:
        raise ValueError(f'{NAME}: port is required')
    port = _number(own, 'port', 0, int, 0)
    if port > 65535:
        raise ValueError(f'{NAME}: port must be at most 65535, got {port}')
    token = _secret(own, 'token')
    hmac_secret = _secret(own, 'hmac_secret')
    allow = own.get('allow_unauthenticated', False)
    if isinstance(allow, str) and allow.strip().lower() in _BOOLEANS:
        # A rulebook variable rendered into the source's arguments arrives as text.
        allow = _BOOLEANS[allow.strip().lower()]
    if not isinstance(allow, bool):
        raise ValueError(f'{NAME}: allow_unauthenticated must be true or false')
    if token is None and hmac_secret is None and not allow:
        raise ValueError(UNAUTHENTICATED_MESSAGE)
    hmac_algo = own.get('hmac_algo') or 'sha256'
    if hmac_algo not in hashlib.algorithms_available:
        raise ValueError(f'{NAME}: hmac_algo {hmac_algo!r} is not available; use one of sha256, sha384, sha512')
    hmac_format = own.get('hmac_format') or 'hex'
    if hmac_format not in ('hex', 'base64'):
        raise ValueError(f'{NAME}: hmac_format must be hex or base64, got {hmac_format!r}')
    if own.get('keyfile') and not own.get('certfile'):
        raise ValueError(f'{NAME}: keyfile needs certfile')
    if own.get('cafile') and not own.get('certfile'):
        raise ValueError(f'{NAME}: cafile (mutual TLS) needs certfile')
    return Settings(
        host=own.get('host') or '0.0.0.0',  # noqa: S104 - a webhook receiver listens for the network by default
        port=port,
        token=token,
        hmac_secret=hmac_secret,
        hmac_header=own.get('hmac_header') or DEFAULT_HMAC_HEADER,
        hmac_algo=hmac_algo,
        hmac_format=hmac_format,
        max_body_bytes=_number(own, 'max_body_bytes', DEFAULT_MAX_BODY_BYTES, int, 1),
        dedup_seconds=_number(own, 'dedup_seconds', DEFAULT_DEDUP_SECONDS, float, 0),
        filter_options=filter_options,
    )


def ssl_context(args: t.Mapping[str, t.Any]) -> ssl.SSLContext | None:
    """HTTPS with ``certfile`` (and ``keyfile``); client certificates required with ``cafile``."""
    if not args.get('certfile'):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args['certfile'], args.get('keyfile') or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f'{NAME}: cannot load certfile/keyfile: {exc}') from None
    if args.get('cafile'):
        try:
            context.load_verify_locations(cafile=args['cafile'])
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f'{NAME}: cannot load cafile: {exc}') from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _token_ok(request: web.Request, token: bytes) -> bool:
    scheme, _space, given = request.headers.get('Authorization', '').strip().partition(' ')
    # Always one comparison of the same cost, whatever is wrong with the header.
    return hmac.compare_digest(given.strip().encode('utf-8', 'replace'), token) and scheme.lower() == 'bearer'


def _signature_ok(settings: Settings, body: bytes, given: str) -> bool:
    given = given.strip()
    prefix = f'{settings.hmac_algo}='
    if given.lower().startswith(prefix):
        given = given[len(prefix):]
    digest = hmac.new(t.cast(bytes, settings.hmac_secret), body, settings.hmac_algo).digest()
    if settings.hmac_format == 'hex':
        expected = binascii.hexlify(digest)
        given_bytes = given.lower().encode('ascii', 'replace')
    else:
        expected = base64.b64encode(digest)
        given_bytes = given.encode('ascii', 'replace')
    return hmac.compare_digest(given_bytes, expected)


def _unauthorized(request: web.Request, settings: Settings) -> web.Response:
    logger.warning('%s: 401 for %s %s from %s', NAME, request.method, request.path, request.remote)
    headers = {'WWW-Authenticate': 'Bearer'} if settings.token is not None else None
    return web.json_response({'error': 'unauthorized'}, status=401, headers=headers)


def _visible_headers(request: web.Request, settings: Settings) -> dict[str, str]:
    hidden = _SECRET_HEADERS | {settings.hmac_header.lower()}
    return {name: value for name, value in request.headers.items() if name.lower() not in hidden}


def build_app(queue: asyncio.Queue[t.Any], args: t.Mapping[str, t.Any]) -> web.Application:
    """The aiohttp application of the source (``main`` serves it; tests drive it with aiohttp's test client)."""
    settings = settings_from(args)
    eda = _plugin_utils()
    dedup = eda.Deduplicator(settings.dedup_seconds)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({'status': 'ok'})

    async def receive(request: web.Request) -> web.Response:
        if settings.token is not None and not _token_ok(request, settings.token):
            return _unauthorized(request, settings)
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return web.json_response({'error': f'body over {settings.max_body_bytes} bytes'}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({'error': f'body over {settings.max_body_bytes} bytes'}, status=413)
        if settings.hmac_secret is not None and not _signature_ok(
            settings, body, request.headers.get(settings.hmac_header, '')
        ):
            return _unauthorized(request, settings)
        try:
            payload = json.loads(body.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            return web.json_response({'error': 'the body is not JSON'}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({'error': 'the body must be a JSON object'}, status=400)
        event: dict[str, t.Any] = {
            'payload': payload,
            'meta': {'endpoint': request.match_info.get('endpoint', ''), 'headers': _visible_headers(request, settings)},
        }
        if settings.filter_options['hosts_from'] == 'ledger':
            # The ledger may be a file or a server: never on the event loop, which serves other requests meanwhile.
            event = await asyncio.to_thread(eda.normalize_event, event, settings.filter_options, logger.warning)
        else:
            event = eda.normalize_event(event, settings.filter_options, logger.warning)
        fields = event.get('temperstack') or {}
        if dedup.seen(fields.get('alert_id'), payload):
            logger.info('%s: duplicate delivery of alert %r dropped', NAME, fields.get('alert_id'))
            return web.json_response({'queued': False, 'duplicate': True})
        await queue.put(event)
        return web.json_response({'queued': True})

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_get('/healthz', healthz)
    app.router.add_post('/{endpoint:.*}', receive)
    return app


async def main(queue: asyncio.Queue[t.Any], args: dict[str, t.Any]) -> None:
    """Serve until cancelled; the listening socket is closed however it ends."""
    app = build_app(queue, args)
    settings = settings_from(args)
    context = ssl_context(args)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        logger.info('%s: listening on %s:%s (%s)', NAME, settings.host, settings.port, 'https' if context else 'http')
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == '__main__':  # pragma: no cover - a quick try on the command line: prints what it would queue

    class _PrintQueue(asyncio.Queue):  # type: ignore[type-arg]
        async def put(self, item: t.Any) -> None:
            print(json.dumps(item, indent=2))  # noqa: T201

    asyncio.run(main(_PrintQueue(), {'port': 5000, 'allow_unauthenticated': True}))
