# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The event source temperstack.alerting.webhook, through aiohttp's test client (port 0) and, for TLS and
cancellation, served by its own ``main`` on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import socket
import ssl
import subprocess
import sys
import typing as t

import pytest
from aiohttp import ClientConnectorError, ClientSession, TCPConnector
from aiohttp.test_utils import TestClient, TestServer

from ansible_collections.temperstack.alerting.extensions.eda.plugins.event_source import webhook

TOKEN = 'tok-LEAKCANARY-1c9e77d2'
SECRET = 'hmac-LEAKCANARY-5a0b3f61'
ALARM = {'alert_name': 'Disk almost full', 'status': 'alarm', 'alert_id': 'disk-web1', 'resource_id': 'web1'}
OK = dict(ALARM, status='OK')


def sign(body: bytes, secret: str = SECRET, algo: str = 'sha256', fmt: str = 'hex') -> str:
    digest = hmac.new(secret.encode(), body, algo)
    return digest.hexdigest() if fmt == 'hex' else base64.b64encode(digest.digest()).decode()


def serve(args: dict[str, t.Any], scenario: t.Callable[[TestClient, asyncio.Queue], t.Awaitable[t.Any]]) -> t.Any:
    """Run ``scenario(client, queue)`` against the source's application on an ephemeral loopback port."""
    async def run() -> t.Any:
        queue: asyncio.Queue = asyncio.Queue()
        app = webhook.build_app(queue, {'port': 0, 'hosts_from': 'none', **args})
        async with TestClient(TestServer(app)) as client:
            return await scenario(client, queue)
    return asyncio.run(run())


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {'Authorization': f'Bearer {token}'}


async def post(client: TestClient, payload: t.Any, headers: dict[str, str] | None = None, path: str = '/') -> tuple[int, t.Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with client.post(path, data=body, headers={'Content-Type': 'application/json', **(headers or {})}) as response:
        return response.status, await response.text()


# -- starting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize('args', [{'port': 5000}, {'port': 5000, 'allow_unauthenticated': False}])
def test_refuses_to_start_without_authentication_naming_the_three_options(args):
    with pytest.raises(ValueError) as raised:
        asyncio.run(webhook.main(asyncio.Queue(), args))
    message = str(raised.value)
    for name in ('token', 'hmac_secret', 'allow_unauthenticated'):
        assert name in message
    assert message == webhook.UNAUTHENTICATED_MESSAGE


@pytest.mark.parametrize('allow', [True, 'true', 'Yes'])
def test_allow_unauthenticated_accepts_anyone(allow):
    async def scenario(client, queue):
        assert (await post(client, ALARM))[0] == 200
        assert queue.qsize() == 1
    serve({'allow_unauthenticated': allow}, scenario)


@pytest.mark.parametrize('args, named', [
    ({'token': TOKEN}, 'port'),
    ({'port': 'http', 'token': TOKEN}, 'port'),
    ({'port': 70000, 'token': TOKEN}, 'port'),
    ({'port': 1, 'token': '', 'hmac_secret': ''}, 'allow_unauthenticated'),
    ({'port': 1, 'token': 5}, 'token'),
    ({'port': 1, 'hmac_secret': SECRET, 'hmac_algo': 'nope'}, 'hmac_algo'),
    ({'port': 1, 'hmac_secret': SECRET, 'hmac_format': 'octal'}, 'hmac_format'),
    ({'port': 1, 'token': TOKEN, 'max_body_bytes': 0}, 'max_body_bytes'),
    ({'port': 1, 'token': TOKEN, 'dedup_seconds': -1}, 'dedup_seconds'),
    ({'port': 1, 'token': TOKEN, 'allow_unauthenticated': 'maybe'}, 'allow_unauthenticated'),
    ({'port': 1, 'allow_unauthenticated': 'false'}, 'allow_unauthenticated'),
    ({'port': 1, 'token': TOKEN, 'keyfile': '/k.pem'}, 'keyfile'),
    ({'port': 1, 'token': TOKEN, 'cafile': '/ca.pem'}, 'cafile'),
    ({'port': 1, 'token': TOKEN, 'hosts_from': 'dns'}, 'hosts_from'),
    ({'port': 1, 'token': TOKEN, 'colour': 'red'}, 'colour'),
])
def test_bad_arguments_are_named(args, named):
    with pytest.raises(ValueError, match=named) as raised:
        webhook.settings_from(args)
    assert TOKEN not in str(raised.value) and SECRET not in str(raised.value)
    assert 'temperstack.alerting.webhook' in str(raised.value)


# -- routes and status codes ----------------------------------------------------------------------------


def test_healthz_answers_without_authentication():
    async def scenario(client, _queue):
        async with client.get('/healthz') as response:
            return response.status, await response.json()
    assert serve({'token': TOKEN}, scenario) == (200, {'status': 'ok'})


@pytest.mark.parametrize('method, path', [('GET', '/'), ('GET', '/hooks/temperstack'), ('PUT', '/'), ('DELETE', '/healthz'),
                                          ('PATCH', '/x')])
def test_other_methods_get_405(method, path):
    async def scenario(client, queue):
        async with client.request(method, path, headers=bearer()) as response:
            assert queue.qsize() == 0
            return response.status
    assert serve({'token': TOKEN}, scenario) == 405


def test_an_alarm_is_queued_with_payload_endpoint_headers_and_temperstack_fields():
    async def scenario(client, queue):
        status, _text = await post(client, ALARM, headers={**bearer(), 'X-Request-Id': 'r1'}, path='/hooks/temperstack')
        return status, queue.get_nowait(), queue.qsize()
    status, event, left = serve({'token': TOKEN}, scenario)
    assert status == 200 and left == 0
    assert event['payload'] == ALARM
    assert event['meta']['endpoint'] == 'hooks/temperstack'
    headers = {name.lower(): value for name, value in event['meta']['headers'].items()}
    assert headers['x-request-id'] == 'r1'
    assert 'authorization' not in headers
    assert event['temperstack'] == {'alert_name': 'Disk almost full', 'status': 'Alarm', 'alert_id': 'disk-web1',
                                    'resource_id': 'web1'}
    assert TOKEN not in json.dumps(event)


def test_hosts_from_resource_id_sets_meta_hosts():
    async def scenario(client, queue):
        await post(client, ALARM, headers=bearer())
        return queue.get_nowait()
    assert serve({'token': TOKEN, 'hosts_from': 'resource_id'}, scenario)['meta']['hosts'] == ['web1']


@pytest.mark.parametrize('headers', [{}, bearer('wrong'), {'Authorization': TOKEN}, {'Authorization': f'Basic {TOKEN}'},
                                     {'Authorization': f'Bearer {TOKEN}x'}, {'Authorization': 'Bearer'}])
def test_missing_or_wrong_token_is_401_without_detail(headers, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario(client, queue):
        status, text = await post(client, ALARM, headers=headers)
        return status, text, queue.qsize()
    status, text, queued = serve({'token': TOKEN}, scenario)
    assert (status, json.loads(text), queued) == (401, {'error': 'unauthorized'}, 0)
    assert TOKEN not in caplog.text and 'wrong' not in caplog.text


def test_no_secret_or_signature_is_logged_or_queued(caplog):
    caplog.set_level(logging.DEBUG)
    body = json.dumps(ALARM).encode()
    signature = sign(body)

    async def scenario(client, queue):
        headers = {**bearer(), 'X-Temperstack-Signature': signature, 'Cookie': 'session=c00kie'}
        status, _text = await post(client, body, headers=headers)
        return status, queue.get_nowait()
    status, event = serve({'token': TOKEN, 'hmac_secret': SECRET, 'hosts_from': 'ledger'}, scenario)
    assert status == 200
    for secret in (TOKEN, SECRET, signature, 'c00kie'):
        assert secret not in caplog.text
        assert secret not in json.dumps(event)


def test_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(webhook.hmac, 'compare_digest', spy)

    async def scenario(client, _queue):
        return [(await post(client, ALARM, headers=h))[0] for h in (bearer('wrong'), bearer())]
    assert serve({'token': TOKEN}, scenario) == [401, 200]
    assert calls == [(b'wrong', TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_signature_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(webhook.hmac, 'compare_digest', spy)
    body = json.dumps(ALARM).encode()

    async def scenario(client, _queue):
        return [(await post(client, body, headers={'X-Temperstack-Signature': given}))[0] for given in ('00', sign(body))]
    assert serve({'hmac_secret': SECRET}, scenario) == [401, 200]
    assert [given for given, _expected in calls] == [b'00', sign(body).encode()]
    assert all(expected == sign(body).encode() for _given, expected in calls)


@pytest.mark.parametrize('fmt, prefix', [('hex', ''), ('hex', 'sha256='), ('base64', ''), ('base64', 'sha256=')])
def test_good_signature_is_accepted(fmt, prefix):
    body = json.dumps(ALARM).encode()

    async def scenario(client, queue):
        status, _text = await post(client, body, headers={'X-Temperstack-Signature': prefix + sign(body, fmt=fmt)})
        return status, queue.qsize()
    assert serve({'hmac_secret': SECRET, 'hmac_format': fmt}, scenario) == (200, 1)


def test_signature_with_another_header_and_algorithm():
    body = json.dumps(ALARM).encode()

    async def scenario(client, queue):
        status, _text = await post(client, body, headers={'X-Hub-Signature-512': 'sha512=' + sign(body, algo='sha512')})
        return status, queue.get_nowait()
    status, event = serve({'hmac_secret': SECRET, 'hmac_header': 'X-Hub-Signature-512', 'hmac_algo': 'sha512'}, scenario)
    assert status == 200
    assert 'x-hub-signature-512' not in {name.lower() for name in event['meta']['headers']}


@pytest.mark.parametrize('signature', [None, '', 'abc', 'WRONG-SECRET', 'OTHER-BODY'])
def test_missing_or_wrong_signature_is_401(signature, caplog):
    caplog.set_level(logging.DEBUG)
    body = json.dumps(ALARM).encode()
    headers = {}
    if signature == 'WRONG-SECRET':
        headers['X-Temperstack-Signature'] = sign(body, secret='other')
    elif signature == 'OTHER-BODY':
        headers['X-Temperstack-Signature'] = sign(body + b' ')
    elif signature is not None:
        headers['X-Temperstack-Signature'] = signature

    async def scenario(client, queue):
        status, text = await post(client, body, headers=headers)
        return status, json.loads(text), queue.qsize()
    assert serve({'hmac_secret': SECRET}, scenario) == (401, {'error': 'unauthorized'}, 0)
    assert SECRET not in caplog.text


def test_token_and_signature_are_both_required_when_both_are_set():
    body = json.dumps(ALARM).encode()
    good = {'X-Temperstack-Signature': sign(body)}

    async def scenario(client, queue):
        results = [(await post(client, body, headers=h))[0] for h in (good, bearer(), {**good, **bearer()})]
        return results, queue.qsize()
    assert serve({'token': TOKEN, 'hmac_secret': SECRET}, scenario) == ([401, 401, 200], 1)


@pytest.mark.parametrize('body', [b'not json', b'{"alert_name": ', b'\xff\xfe{}', b'[1, 2]', b'"Alarm"', b''])
def test_a_body_that_is_not_a_json_object_is_400(body):
    async def scenario(client, queue):
        status, _text = await post(client, body, headers=bearer())
        return status, queue.qsize()
    assert serve({'token': TOKEN}, scenario) == (400, 0)


def test_a_body_over_the_limit_is_413_and_at_the_limit_is_accepted():
    small = json.dumps(ALARM).encode()
    limit = len(small)

    async def scenario(client, queue):
        at_limit = (await post(client, small, headers=bearer()))[0]
        over = (await post(client, small + b' ', headers=bearer()))[0]
        return at_limit, over, queue.qsize()
    assert serve({'token': TOKEN, 'max_body_bytes': limit}, scenario) == (200, 413, 1)


def test_a_chunked_body_over_the_limit_is_413():
    async def chunks():
        for _round in range(64):
            yield b' ' * 1024

    async def scenario(client, queue):
        async with client.post('/', data=chunks(), headers=bearer()) as response:
            return response.status, queue.qsize()
    assert serve({'token': TOKEN, 'max_body_bytes': 4096}, scenario) == (413, 0)


def test_the_default_limit_is_one_mebibyte():
    assert webhook.settings_from({'port': 1, 'token': TOKEN}).max_body_bytes == 1024 * 1024


def test_an_unauthenticated_big_body_gets_401_not_413():
    async def scenario(client, _queue):
        return (await post(client, b'{' + b' ' * 10000 + b'}'))[0]
    assert serve({'token': TOKEN, 'max_body_bytes': 100}, scenario) == 401


# -- duplicates -------------------------------------------------------------------------------------------


def test_an_identical_delivery_is_answered_and_dropped():
    async def scenario(client, queue):
        answers = [await post(client, ALARM, headers=bearer()) for _round in range(3)]
        return [status for status, _text in answers], [json.loads(text) for _status, text in answers], queue.qsize()
    statuses, bodies, queued = serve({'token': TOKEN}, scenario)
    assert statuses == [200, 200, 200] and queued == 1
    assert bodies[1] == {'queued': False, 'duplicate': True}


def test_alarm_ok_alarm_are_three_events():
    async def scenario(client, queue):
        for payload in (ALARM, OK, ALARM):
            assert (await post(client, payload, headers=bearer()))[0] == 200
        return [queue.get_nowait()['temperstack']['status'] for _round in range(queue.qsize())]
    assert serve({'token': TOKEN}, scenario) == ['Alarm', 'OK', 'Alarm']


def test_other_alerts_and_changed_payloads_are_not_duplicates():
    async def scenario(client, queue):
        for payload in (ALARM, dict(ALARM, alert_id='disk-web2'), dict(ALARM, description='now 99%')):
            await post(client, payload, headers=bearer())
        return queue.qsize()
    assert serve({'token': TOKEN}, scenario) == 3


def test_dedup_seconds_zero_keeps_every_delivery():
    async def scenario(client, queue):
        for _round in range(3):
            await post(client, ALARM, headers=bearer())
        return queue.qsize()
    assert serve({'token': TOKEN, 'dedup_seconds': 0}, scenario) == 3


def test_a_duplicate_after_the_window_is_an_event_again():
    now = [1000.0]
    dedup = webhook._plugin_utils().Deduplicator(300, clock=lambda: now[0])
    assert not dedup.seen('a', ALARM)
    now[0] += 299
    assert dedup.seen('a', ALARM)
    now[0] += 2  # 301 s after the first: the window counts from the first of a run of identical deliveries
    assert not dedup.seen('a', ALARM)
    assert not dedup.seen(None, ALARM) and not dedup.seen(None, ALARM)


def test_dedup_memory_is_bounded():
    dedup = webhook._plugin_utils().Deduplicator(300, limit=2)
    for key in 'abc':
        dedup.seen(key, ALARM)
    assert not dedup.seen('a', ALARM)  # forgotten: the least recently seen
    assert dedup.seen('c', ALARM)


def test_an_event_without_alert_id_or_name_is_queued_untouched_and_never_deduplicated():
    async def scenario(client, queue):
        for _round in range(2):
            await post(client, {'hello': 'world'}, headers=bearer())
        return [queue.get_nowait() for _round in range(queue.qsize())]
    events = serve({'token': TOKEN}, scenario)
    assert len(events) == 2 and 'temperstack' not in events[0]


# -- served by main(): cancellation and TLS --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


async def started(args: dict[str, t.Any], ssl_client: ssl.SSLContext | None = None) -> tuple[asyncio.Task, asyncio.Queue, str]:
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(webhook.main(queue, {'host': '127.0.0.1', 'hosts_from': 'none', **args}))
    base = f"{'https' if ssl_client else 'http'}://127.0.0.1:{args['port']}"
    for _round in range(200):
        await asyncio.sleep(0.01)
        try:
            reader, writer = await asyncio.open_connection('127.0.0.1', args['port'])
        except OSError:
            continue
        del reader
        writer.close()
        return task, queue, base
    raise AssertionError('the source did not start')


def test_cancellation_closes_the_listening_socket():
    port = free_port()

    async def run():
        task, queue, base = await started({'port': port, 'token': TOKEN})
        async with ClientSession() as session:
            async with session.post(base + '/', json=ALARM, headers=bearer()) as response:
                assert response.status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(OSError):
            await asyncio.open_connection('127.0.0.1', port)
        return queue.qsize()
    assert asyncio.run(run()) == 1
    with socket.socket() as again:  # the port is free again
        again.bind(('127.0.0.1', port))


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    import trustme  # pylint: disable=import-outside-toplevel
    directory = tmp_path_factory.mktemp('pki')
    ca = trustme.CA()
    server = ca.issue_cert('127.0.0.1', 'localhost')
    client = ca.issue_cert('temperstack-sender@example.com')
    paths = {'ca': directory / 'ca.pem', 'cert': directory / 'server.pem', 'key': directory / 'server.key',
             'client': directory / 'client.pem'}
    ca.cert_pem.write_to_path(str(paths['ca']))
    server.cert_chain_pems[0].write_to_path(str(paths['cert']))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths['cert']), append=True)
    server.private_key_pem.write_to_path(str(paths['key']))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths['client']))
    return {name: str(path) for name, path in paths.items()}


def client_context(pki, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki['ca'])
    if with_cert:
        context.load_cert_chain(pki['client'])
    return context


def test_tls(pki):
    port = free_port()

    async def run():
        task, queue, base = await started({'port': port, 'token': TOKEN, 'certfile': pki['cert'], 'keyfile': pki['key']},
                                          ssl_client=client_context(pki, False))
        try:
            async with ClientSession(connector=TCPConnector(ssl=client_context(pki, False))) as session:
                async with session.post(base + '/', json=ALARM, headers=bearer()) as response:
                    assert response.status == 200
            async with ClientSession() as session:  # plain HTTP to a TLS port gets no answer
                with pytest.raises(Exception):  # noqa: B017 - aiohttp raises one of several errors here
                    async with session.post(f'http://127.0.0.1:{port}/', json=ALARM, headers=bearer()) as response:
                        await response.read()
            return queue.qsize()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert asyncio.run(run()) == 1


def test_mutual_tls_requires_a_client_certificate(pki):
    port = free_port()
    args = {'port': port, 'token': TOKEN, 'certfile': pki['cert'], 'keyfile': pki['key'], 'cafile': pki['ca']}

    async def run():
        task, queue, base = await started(args, ssl_client=client_context(pki, True))
        try:
            async with ClientSession(connector=TCPConnector(ssl=client_context(pki, True))) as session:
                async with session.post(base + '/', json=ALARM, headers=bearer()) as response:
                    assert response.status == 200
            async with ClientSession(connector=TCPConnector(ssl=client_context(pki, False))) as session:
                with pytest.raises((ClientConnectorError, OSError, Exception)):  # noqa: B017
                    async with session.post(base + '/', json=OK, headers=bearer()) as response:
                        await response.read()
            return queue.qsize()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert asyncio.run(run()) == 1


def test_unreadable_certificates_are_named(tmp_path):
    with pytest.raises(ValueError, match='certfile'):
        webhook.ssl_context({'certfile': str(tmp_path / 'missing.pem')})


def test_loads_by_path_as_ansible_rulebook_does(tmp_path):
    """A fresh, isolated Python runs the file by path and finds the collection's plugin_utils from it."""
    script = (
        'import runpy, sys\n'
        'module = runpy.run_path(sys.argv[1])\n'
        'print(module["settings_from"]({"port": 1, "token": "t"}).max_body_bytes)\n'
    )
    done = subprocess.run([sys.executable, '-I', '-c', script, webhook.__file__], cwd=str(tmp_path),
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, '1048576'), done.stderr
