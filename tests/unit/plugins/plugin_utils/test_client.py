# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import email.utils
import http.client
import http.server
import json
import os
import pathlib
import random
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import typing as t
from urllib.error import HTTPError, URLError

import pytest
import yaml
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, SSLValidationError

from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (
    BACKOFF_CAP,
    COLLECTION_VERSION,
    MAX_RESPONSE_CHARS,
    RETRY_AFTER_CAP,
    USER_AGENT,
    Acknowledgement,
    SendError,
    TemperstackClient,
    _tls_context,
    check_ca_path,
    check_retries,
    check_timeout,
    open_webhook,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import MASK, resolve_endpoint

COLLECTION_ROOT = pathlib.Path(__file__).resolve().parents[4]

PAYLOAD = {'alert_name': 'Disk almost full', 'status': 'Alarm', 'alert_id': 'disk-web01', 'description': 'Grüße 💥'}

RETRYABLE = [
    pytest.param(lambda o: o.raise_(URLError(ConnectionRefusedError(111, 'Connection refused'))), id='connection-refused'),
    pytest.param(lambda o: o.raise_(URLError('[Errno -2] Name or service not known')), id='dns'),
    pytest.param(lambda o: o.raise_(socket.timeout('timed out')), id='socket-timeout'),
    pytest.param(lambda o: o.raise_(TimeoutError('timed out')), id='timeout-error'),
    pytest.param(lambda o: o.raise_(URLError(socket.timeout('timed out'))), id='urlerror-timeout'),
    pytest.param(lambda o: o.raise_(ConnectionResetError(104, 'Connection reset by peer')), id='connection-reset'),
    pytest.param(lambda o: o.raise_(http.client.RemoteDisconnected('Remote end closed connection')), id='remote-disconnected'),
    pytest.param(lambda o: o.raise_(http.client.IncompleteRead(b'')), id='incomplete-read'),
    pytest.param(lambda o: o.raise_(UrlsConnectionError('Failed to connect')), id='urls-connection-error'),
    pytest.param(lambda o: o.http_error(429, 'slow down'), id='429'),
    pytest.param(lambda o: o.http_error(500, 'internal error'), id='500'),
    pytest.param(lambda o: o.http_error(502, 'bad gateway'), id='502'),
    pytest.param(lambda o: o.http_error(503, 'unavailable'), id='503'),
    pytest.param(lambda o: o.http_error(504, 'gateway timeout'), id='504'),
]


@pytest.fixture
def make_client(endpoint, opener, sleeps):
    """A client on the test endpoint with the fake opener, recorded sleeps and a fixed jitter."""

    def make(**kwargs):
        kwargs.setdefault('opener', opener)
        kwargs.setdefault('sleep', sleeps.append)
        kwargs.setdefault('jitter', lambda: 0.5)
        return TemperstackClient(endpoint, **kwargs)

    return make


def send_error(client, payload=None) -> SendError:
    with pytest.raises(SendError) as info:
        client.send(payload or PAYLOAD)
    assert client.endpoint.url not in info.value.message
    assert str(info.value) == info.value.message
    return info.value


# -- the request ----------------------------------------------------------------------------------


def test_posts_the_payload_as_json(make_client, opener, endpoint, sleeps):
    delivery = make_client().send(PAYLOAD)

    assert delivery == Acknowledgement(200, 1, '{"result":"ok"}')
    assert sleeps == []
    [call] = opener.calls
    assert call.url == endpoint.url
    assert call.kwargs['method'] == 'POST'
    assert isinstance(call.kwargs['data'], bytes)
    assert json.loads(call.kwargs['data'].decode('utf-8')) == PAYLOAD
    assert call.kwargs['headers']['Content-Type'] == 'application/json'
    assert call.kwargs['follow_redirects'] == 'none'


def test_http_agent_names_the_collection_and_its_version(make_client, opener):
    make_client().send(PAYLOAD)
    agent = opener.calls[0].kwargs['http_agent']
    assert agent == USER_AGENT
    assert f'temperstack.alerting/{COLLECTION_VERSION}' in agent
    assert 'ansible-core' in agent


@pytest.mark.parametrize(
    ('kwargs', 'expected'),
    [
        ({}, {'timeout': 10, 'validate_certs': True, 'ca_path': None}),
        ({'timeout': 3, 'validate_certs': False, 'ca_path': '/etc/pki/ca.pem'}, {'timeout': 3, 'validate_certs': False, 'ca_path': '/etc/pki/ca.pem'}),
    ],
)
def test_connection_settings_passed_to_open_url(make_client, opener, kwargs, expected):
    make_client(**kwargs).send(PAYLOAD)
    passed = opener.calls[0].kwargs
    assert {name: passed[name] for name in expected} == expected


def test_accepts_any_2xx(make_client, opener):
    opener.respond(202, b'queued')
    assert make_client().send(PAYLOAD) == Acknowledgement(202, 1, 'queued')


def test_default_opener_is_open_url_with_a_reused_tls_context(endpoint, monkeypatch):
    # Certificates, CA paths and proxies are handled by ansible-core's Request, the engine of open_url,
    # as in every other Ansible plugin; only the TLS context is built once instead of per request.
    client = TemperstackClient(endpoint)
    assert client._opener is open_webhook  # pylint: disable=protected-access

    calls = []
    monkeypatch.setattr(Request, 'open', lambda self, method, url, **kwargs: calls.append((method, url, kwargs)))
    for url in ('https://acme.temperstack.com/x', 'https://acme.temperstack.com/y', 'http://127.0.0.1/z'):
        open_webhook(url, method='POST', validate_certs=True, ca_path=None, timeout=3)
    https_contexts = [kwargs['context'] for _method, url, kwargs in calls if url.startswith('https')]
    assert https_contexts[0] is https_contexts[1]
    assert https_contexts[0].verify_mode == ssl.CERT_REQUIRED
    assert calls[2][2]['context'] is not https_contexts[0]
    assert [(method, kwargs['timeout']) for method, _url, kwargs in calls] == [('POST', 3)] * 3


def test_tls_context_honours_validate_certs():
    assert _tls_context(True, False, None).verify_mode == ssl.CERT_NONE
    assert _tls_context(True, True, None).verify_mode == ssl.CERT_REQUIRED


def test_collection_version_matches_galaxy_yml():
    galaxy = yaml.safe_load((COLLECTION_ROOT / 'galaxy.yml').read_text(encoding='utf-8'))
    assert (galaxy['namespace'], galaxy['name']) == ('temperstack', 'alerting')
    assert COLLECTION_VERSION == str(galaxy['version'])


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize('fail', RETRYABLE)
def test_retryable_failures_are_retried(make_client, opener, sleeps, fail):
    fail(opener)
    delivery = make_client(retries=1).send(PAYLOAD)
    assert delivery.http_status == 200
    assert delivery.attempts == 2
    assert len(opener.calls) == 2
    assert opener.bodies == [PAYLOAD, PAYLOAD]
    assert len(sleeps) == 1


def test_attempts_counted_across_mixed_failures(make_client, opener, sleeps):
    (opener.raise_(URLError(ConnectionRefusedError(111, 'Connection refused')))
     .raise_(socket.timeout('timed out'))
     .http_error(503, 'unavailable')
     .raise_(ConnectionResetError(104, 'reset'))
     .http_error(429, 'slow down')
     .respond(200, b'ok'))
    delivery = make_client(retries=5).send(PAYLOAD)
    assert delivery == Acknowledgement(200, 6, 'ok')
    assert len(sleeps) == 5


def test_exponential_backoff_with_jitter(make_client, opener, sleeps):
    opener.http_error(503, times=8)
    error = send_error(make_client(retries=7, jitter=lambda: 0.5))
    # ceiling 0.5, 1, 2, 4, 8 (capped), 8, 8 seconds; half fixed, half jitter (here 0.5 of the other half)
    assert sleeps == [0.375, 0.75, 1.5, 3.0, 6.0, 6.0, 6.0]
    assert error.attempts == 8


@pytest.mark.parametrize(('jitter', 'factor'), [(0.0, 0.5), (1.0, 1.0)])
def test_jitter_spreads_between_half_and_full_backoff(make_client, opener, sleeps, jitter, factor):
    opener.http_error(503, times=6)
    send_error(make_client(retries=5, jitter=lambda: jitter))
    assert sleeps == [ceiling * factor for ceiling in (0.5, 1.0, 2.0, 4.0, BACKOFF_CAP)]


def test_default_jitter_is_random_within_bounds(make_client, opener, sleeps):
    opener.http_error(503, times=3)
    send_error(make_client(retries=2, jitter=random.random))
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


@pytest.mark.parametrize('status', [429, 503])
@pytest.mark.parametrize(('retry_after', 'delay'), [('7', 7.0), ('0', 0.0), (' 12 ', 12.0), ('3600', RETRY_AFTER_CAP)])
def test_retry_after_seconds_honoured_and_capped(make_client, opener, sleeps, status, retry_after, delay):
    opener.http_error(status, 'busy', headers={'Retry-After': retry_after})
    assert make_client(retries=1).send(PAYLOAD).attempts == 2
    assert sleeps == [delay]


def test_retry_after_http_date_honoured(make_client, opener, sleeps):
    opener.http_error(503, headers={'Retry-After': email.utils.formatdate(time.time() + 10, usegmt=True)})
    make_client(retries=1).send(PAYLOAD)
    [delay] = sleeps
    assert 8.0 <= delay <= 10.0


@pytest.mark.parametrize(('offset', 'expected'), [(-3600, 0.0), (86400, RETRY_AFTER_CAP)])
def test_retry_after_http_date_in_past_or_far_future(make_client, opener, sleeps, offset, expected):
    opener.http_error(429, headers={'Retry-After': email.utils.formatdate(time.time() + offset, usegmt=True)})
    make_client(retries=1).send(PAYLOAD)
    assert sleeps == [expected]


@pytest.mark.parametrize('retry_after', ['soon', '-5', '1.5', ''])
def test_unusable_retry_after_falls_back_to_backoff(make_client, opener, sleeps, retry_after):
    opener.http_error(503, headers={'Retry-After': retry_after})
    make_client(retries=1).send(PAYLOAD)
    assert sleeps == [0.375]


def test_gives_up_after_retries_with_status_and_answer(make_client, opener, sleeps):
    opener.http_error(503, '{"error": "maintenance until 10:00"}', times=4)
    error = send_error(make_client(retries=3))
    assert error.http_status == 503
    assert error.attempts == 4
    assert len(opener.calls) == 4
    assert len(sleeps) == 3
    assert 'after 4 attempts' in error.message
    assert 'HTTP 503' in error.message
    assert 'maintenance until 10:00' in error.message
    assert f'/api/integration/webhook/{MASK}' in error.message


def test_gives_up_after_connection_errors_without_status(make_client, opener):
    opener.raise_(URLError(ConnectionRefusedError(111, 'Connection refused')), times=3)
    error = send_error(make_client(retries=2))
    assert error.http_status is None
    assert error.attempts == 3
    assert 'Connection refused' in error.message


def test_gives_up_after_timeouts(make_client, opener):
    opener.raise_(socket.timeout('timed out'), times=2)
    error = send_error(make_client(retries=1, timeout=4))
    assert error.message.endswith('after 2 attempts: no answer within the 4 s timeout')


@pytest.mark.parametrize('retries', [0, -1])
def test_no_retries(make_client, opener, sleeps, retries):
    opener.http_error(500, 'boom')
    error = send_error(make_client(retries=retries))
    assert error.attempts == 1
    assert 'after 1 attempt:' in error.message
    assert sleeps == []


# -- final answers --------------------------------------------------------------------------------


@pytest.mark.parametrize('status', [401, 403, 404])
def test_rejected_key_is_final(make_client, opener, sleeps, status):
    opener.http_error(status, 'unknown integration')
    error = send_error(make_client(retries=3))
    assert error.http_status == status
    assert error.attempts == 1
    assert len(opener.calls) == 1
    assert sleeps == []
    assert error.message.startswith('the integration key was rejected by https://acme.temperstack.com/api/integration/webhook/')
    assert f'HTTP {status}: unknown integration' in error.message


@pytest.mark.parametrize('status', [400, 405, 409, 413, 422])
def test_other_4xx_are_final(make_client, opener, sleeps, status):
    opener.http_error(status, '{"error": "status must be Alarm or OK"}')
    error = send_error(make_client(retries=3))
    assert error.http_status == status
    assert error.attempts == 1
    assert len(opener.calls) == 1
    assert sleeps == []
    assert error.message == f'Temperstack refused the alert (HTTP {status}: {{"error": "status must be Alarm or OK"}})'


def test_final_error_after_retries_counts_every_attempt(make_client, opener):
    opener.http_error(503).raise_(socket.timeout()).http_error(400, 'bad body')
    error = send_error(make_client(retries=5))
    assert (error.http_status, error.attempts) == (400, 3)


@pytest.mark.parametrize('status', [301, 302, 303, 307, 308])
def test_redirect_is_final_and_names_the_masked_location(make_client, opener, api_key, sleeps, status):
    location = f'https://acme-eu.temperstack.com/api/integration/webhook/{api_key}'
    opener.http_error(status, f'moved to {location}', headers={'Location': location})
    error = send_error(make_client(retries=3))
    assert error.http_status == status
    assert error.attempts == 1
    assert sleeps == []
    assert 'redirect' in error.message and f'HTTP {status}' in error.message
    assert f'https://acme-eu.temperstack.com/api/integration/webhook/{MASK}' in error.message
    assert api_key not in error.message


def test_redirect_without_location(make_client, opener):
    opener.http_error(302)
    assert 'an unknown location' in send_error(make_client()).message


@pytest.mark.parametrize(
    'exc',
    [
        pytest.param(SSLValidationError('Failed to validate the SSL certificate for acme.temperstack.com:443'), id='ansible'),
        pytest.param(ssl.SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed'), id='ssl'),
        pytest.param(URLError(ssl.SSLCertVerificationError(1, 'certificate verify failed')), id='urlerror-ssl'),
        # How Request.open raises a certificate issued for another name (ssl.CertificateError is the same class).
        pytest.param(URLError(ssl.CertificateError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for 'acme.temperstack.com'."
        )), id='urlerror-hostname-mismatch'),
    ],
)
def test_tls_failure_is_final_and_explains_ca_path(make_client, opener, sleeps, exc):
    opener.raise_(exc)
    error = send_error(make_client(retries=3))
    assert error.http_status is None
    assert error.attempts == 1
    assert len(opener.calls) == 1
    assert sleeps == []
    assert error.message.startswith('TLS verification of https://acme.temperstack.com/api/integration/webhook/')
    assert 'ca_path' in error.message and 'validate_certs' in error.message


# -- TLS: only a refused certificate is final (issue 10, item 8) -----------------------------------

HANDSHAKE_EOF = '[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol (_ssl.c:1020)'

# What a proxy or load balancer in the middle of a restart or a failover does to a TLS handshake: close the
# connection (the client reads EOF) or reset it. None of it says anything about the certificate.
TRANSIENT_TLS = [
    pytest.param(lambda: ssl.SSLEOFError(8, HANDSHAKE_EOF), id='ssl-eof'),
    # How Request.open raises it: urllib wraps every OSError of the connection in a URLError.
    pytest.param(lambda: URLError(ssl.SSLEOFError(8, HANDSHAKE_EOF)), id='urlerror-ssl-eof'),
    pytest.param(lambda: URLError(ConnectionResetError(104, 'Connection reset by peer')), id='urlerror-reset-in-handshake'),
    pytest.param(lambda: ssl.SSLZeroReturnError(6, 'TLS/SSL connection has been closed (EOF) (_ssl.c:1020)'), id='ssl-zero-return'),
    pytest.param(lambda: URLError(ssl.SSLError(1, '[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure')), id='urlerror-ssl-alert'),
]


@pytest.mark.parametrize('make_exc', TRANSIENT_TLS)
def test_tls_failure_other_than_verification_is_retried_then_succeeds(make_client, opener, sleeps, make_exc):
    opener.raise_(make_exc())
    assert make_client(retries=3).send(PAYLOAD) == Acknowledgement(200, 2, '{"result":"ok"}')
    assert len(opener.calls) == 2
    assert sleeps == [0.375]  # the backoff of any connection error


@pytest.mark.parametrize('make_exc', TRANSIENT_TLS)
def test_tls_failure_other_than_verification_on_every_attempt_gives_up_after_the_retries(
    make_client, opener, sleeps, api_key, make_exc
):
    opener.raise_(make_exc(), times=4)
    error = send_error(make_client(retries=3))
    assert (error.http_status, error.attempts) == (None, 4)
    assert len(opener.calls) == 4
    assert len(sleeps) == 3
    assert error.message.startswith(f'could not deliver to https://acme.temperstack.com/api/integration/webhook/{MASK} after 4 attempts: ')
    # Advice to fix the CA bundle would send the reader the wrong way: the certificate was never refused.
    assert 'verification' not in error.message and 'ca_path' not in error.message
    assert api_key not in error.message


def test_tls_eof_names_tls_in_the_message(make_client, opener):
    opener.raise_(URLError(ssl.SSLEOFError(8, HANDSHAKE_EOF)), times=2)
    error = send_error(make_client(retries=1))
    assert error.message.endswith(f'after 2 attempts: the TLS connection failed ({HANDSHAKE_EOF})')


class _FlakyTLSServer(socketserver.TCPServer):
    """An HTTPS endpoint on 127.0.0.1 that drops its first connections during the TLS handshake.

    ``drops`` says how, one word per connection: ``close`` after reading the ClientHello (the client reads EOF, an
    SSLEOFError) or ``reset`` (a TCP reset, a ConnectionResetError). Every later connection gets TLS with
    ``certificate`` and a 200.
    """

    def __init__(self, certificate: t.Any, drops: t.Sequence[str]) -> None:
        super().__init__(('127.0.0.1', 0), _AcceptingHandler)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        certificate.configure_cert(self.context)
        self.drops = list(drops)
        self.connections = 0
        self.bodies: list[t.Any] = []

    def finish_request(self, request, client_address):
        self.connections += 1
        request.settimeout(5)  # a client that never speaks must not hang the server, and the test's teardown
        if self.drops:
            if self.drops.pop(0) == 'reset':
                # Linger 0: close() sends RST instead of FIN.
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            else:
                # Closed with the ClientHello unread, the socket would send RST, not FIN.
                _read_tls_record(request)
            request.close()
            return
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # the client refused our certificate
            return
        with tls:
            super().finish_request(tls, client_address)


def _read_tls_record(sock: socket.socket) -> None:
    def read_exactly(size: int) -> bytes:
        data = b''
        while len(data) < size and (chunk := sock.recv(size - len(data))):
            data += chunk
        return data

    header = read_exactly(5)  # type, version, length
    if len(header) == 5:
        read_exactly(int.from_bytes(header[3:5], 'big'))


class _AcceptingHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # pylint: disable=invalid-name
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.server.bodies.append(json.loads(body))
        answer = b'{"status": "success"}'
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


@pytest.fixture
def tls_endpoint(monkeypatch, tmp_path, api_key):
    """start(drops, name, trusted) -> (server, endpoint, ca_path): a real HTTPS endpoint and a CA bundle, of the CA
    that signed its certificate for ``name`` (``trusted``) or of another."""
    import trustme  # pylint: disable=import-outside-toplevel

    for name in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1')
    servers = []

    def start(drops=(), name='127.0.0.1', trusted=True):
        ca = trustme.CA()
        ca_path = tmp_path / f'ca-{len(servers)}.pem'
        (ca if trusted else trustme.CA()).cert_pem.write_to_path(str(ca_path))
        server = _FlakyTLSServer(ca.issue_cert(name), drops)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        endpoint = resolve_endpoint({'api_key': api_key, 'base_url': f'https://127.0.0.1:{server.server_address[1]}'}, environ={})
        return server, endpoint, str(ca_path)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_real_handshake_dropped_by_a_proxy_is_retried_then_delivered(tls_endpoint, sleeps):
    server, endpoint, ca_path = tls_endpoint(drops=['close', 'reset'])
    client = TemperstackClient(endpoint, timeout=5, retries=3, ca_path=ca_path, sleep=sleeps.append)

    acknowledgement = client.send(PAYLOAD)

    assert (acknowledgement.http_status, acknowledgement.attempts) == (200, 3)
    assert server.connections == 3
    assert server.bodies == [PAYLOAD]
    assert len(sleeps) == 2


def test_real_handshake_dropped_every_time_gives_up_after_the_retries(tls_endpoint, sleeps, api_key):
    server, endpoint, ca_path = tls_endpoint(drops=['close'] * 3)
    client = TemperstackClient(endpoint, timeout=5, retries=2, ca_path=ca_path, sleep=sleeps.append)

    with pytest.raises(SendError) as info:
        client.send(PAYLOAD)

    assert (info.value.http_status, info.value.attempts) == (None, 3)
    assert server.connections == 3
    assert 'after 3 attempts: the TLS connection failed (' in info.value.message
    assert api_key not in info.value.message


@pytest.mark.parametrize(
    'refused',
    [
        pytest.param({'name': 'temperstack.example.com'}, id='certificate-for-another-name'),
        pytest.param({'trusted': False}, id='unknown-ca'),
    ],
)
def test_real_certificate_refused_is_final(tls_endpoint, sleeps, refused):
    server, endpoint, ca_path = tls_endpoint(**refused)
    client = TemperstackClient(endpoint, timeout=5, retries=3, ca_path=ca_path, sleep=sleeps.append)

    with pytest.raises(SendError) as info:
        client.send(PAYLOAD)

    assert (info.value.http_status, info.value.attempts) == (None, 1)
    assert server.connections == 1
    assert sleeps == []
    assert info.value.message.startswith(f'TLS verification of https://127.0.0.1:{server.server_address[1]}/api/integration/webhook/{MASK} failed (')
    assert 'set ca_path' in info.value.message


# -- what errors show -----------------------------------------------------------------------------


@pytest.mark.parametrize('status', [400, 404, 500])
def test_key_never_in_error_even_when_echoed(make_client, opener, endpoint, api_key, status):
    echo = f'no webhook at {endpoint.url} (key {api_key})'
    opener.http_error(status, echo, times=2)
    error = send_error(make_client(retries=1))
    assert api_key not in error.message
    assert f'HTTP {status}' in error.message
    assert f'no webhook at https://acme.temperstack.com/api/integration/webhook/{MASK} (key {MASK})' in error.message


def test_key_never_in_connection_error(make_client, opener, endpoint, api_key):
    opener.raise_(URLError(f'cannot reach {endpoint.url}'))
    error = send_error(make_client(retries=0))
    assert api_key not in error.message
    assert f'cannot reach https://acme.temperstack.com/api/integration/webhook/{MASK}' in error.message


def test_key_never_in_tls_error(make_client, opener, endpoint, api_key):
    opener.raise_(SSLValidationError(f'Failed to validate the SSL certificate for {endpoint.url}'))
    assert api_key not in send_error(make_client()).message


def test_key_never_in_success_response(make_client, opener, endpoint, api_key):
    opener.respond(200, f'accepted for {endpoint.url}'.encode())
    assert api_key not in make_client().send(PAYLOAD).response


def test_long_answer_truncated_and_whitespace_collapsed(make_client, opener):
    opener.http_error(400, '<html>\n  <body>\t' + 'x' * 5000 + '</body></html>')
    message = send_error(make_client()).message
    assert '<html> <body> xxx' in message
    assert 'x' * (MAX_RESPONSE_CHARS + 1) not in message
    assert message.endswith('...)')


def test_undecodable_answer(make_client, opener):
    opener.http_error(400, b'\xff\xfe bad \x00 bytes')
    assert 'HTTP 400: ' in send_error(make_client()).message


def test_unreadable_answer_keeps_the_status(make_client, opener, endpoint):
    class Unreadable:
        def read(self, size=-1):
            raise ConnectionResetError('reset while reading')

        def close(self):
            pass

    opener.raise_(HTTPError(endpoint.url, 400, 'Bad Request', http.client.HTTPMessage(), Unreadable()))
    error = send_error(make_client())
    assert error.message == 'Temperstack refused the alert (HTTP 400)'


@pytest.mark.parametrize('value', [0, -1, 0.0, float('nan'), '5', None, True])
def test_check_timeout_rejects_what_is_not_a_positive_number(value):
    with pytest.raises(AlertValidationError, match='^timeout must be a positive number of seconds, got'):
        check_timeout(value)


@pytest.mark.parametrize('value', [3600.5, 10 ** 12, float('inf')])
def test_check_timeout_rejects_what_a_socket_cannot_take(value):
    # Found by the fault suite (tests/faults): socket.settimeout(10 ** 12) raises OverflowError, a traceback.
    with pytest.raises(AlertValidationError, match='^timeout must be at most 3600 seconds, got'):
        check_timeout(value)


@pytest.mark.parametrize('value', [-1, 11, 10 ** 9, '3', None, 2.5, True])
def test_check_retries_bounds(value):
    with pytest.raises(AlertValidationError, match='^retries must be between 0 and 10, got'):
        check_retries(value)


def test_check_timeout_and_retries_pass_good_values_through():
    assert [check_timeout(v) for v in (1, 2.5, 3600)] == [1, 2.5, 3600]
    assert [check_retries(v) for v in (0, 3, 10)] == [0, 3, 10]


def test_tls_failure_says_why_the_certificate_was_refused(endpoint, opener):
    # Found by the fault suite (tests/faults): an expired and an untrusted certificate both read
    # "failed (CERTIFICATE_VERIFY_FAILED)"; OpenSSL's reason tells them apart.
    error = ssl.SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed')
    error.reason = 'CERTIFICATE_VERIFY_FAILED'
    error.verify_message = 'certificate has expired'
    opener.raise_(URLError(error))
    client = TemperstackClient(endpoint, opener=opener, sleep=lambda seconds: None)

    with pytest.raises(SendError) as info:
        client.send(PAYLOAD)

    assert 'failed (CERTIFICATE_VERIFY_FAILED: certificate has expired); set ca_path' in info.value.message
    assert info.value.attempts == 1


def test_check_timeout_takes_integers_too_large_for_a_float():
    # Found by the fault suite (tests/faults): TEMPERSTACK_TIMEOUT=1e400 reaches the callback as an integer with
    # 400 digits; math.isnan() on it raised OverflowError, so the callback failed instead of naming the option.
    with pytest.raises(AlertValidationError, match='^timeout must be at most 3600 seconds'):
        check_timeout(10 ** 400)


@pytest.mark.parametrize('plugin, loads_urls', [
    # ansible-playbook never sends for the callback (its delivery process does): no urls there.
    ('callback.playbook_alerts', False),
    # ansible-playbook loads the action plugin before it forks a worker per task and host: loading urls with it
    # spares every worker the import (some 20 ms) on its first request.
    ('action.alert', True),
])
def test_which_plugins_load_the_http_stack(plugin, loads_urls):
    # A fresh interpreter, because this one has long imported ansible.module_utils.urls for other tests.
    probe = (
        'import sys\n'
        'import ansible.cli.playbook\n'
        f'import ansible_collections.temperstack.alerting.plugins.{plugin}\n'
        'print("ansible.module_utils.urls" in sys.modules)\n'
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    result = subprocess.run([sys.executable, '-c', probe], env=env, capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(loads_urls)


@pytest.mark.parametrize('content', [b'', b'not a certificate\n', b'-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n'])
def test_a_ca_path_without_a_certificate_is_an_error_naming_ca_path(tmp_path, content):
    # Left to the TLS layer it reads "[X509] PEM lib", and is retried like a connection that failed.
    bundle = tmp_path / 'ca.pem'
    bundle.write_bytes(content)
    with pytest.raises(AlertValidationError, match=f'^ca_path {bundle} holds no usable CA certificate .*: give the PEM bundle'):
        check_ca_path(str(bundle))
