# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 4: bad input, fuzzed with Hypothesis.

Every option of the module (through the action plugin's own argument handling, as a task runs it) and of the
callback (its settings through ansible's configuration system, from the environment), and task results of any
shape flowing into the callback's descriptions. Each input must either yield a request whose body the stand-in
accepts (the seed's contract, checked with the stand-in's own rules) or a clear error that names the option:
never a traceback, never a request with an invalid body, never the key in a message.

HTTP is replaced by an opener that checks each body against the contract (and still builds the real TLS
context, so ca_path and validate_certs are exercised); the ledger, the action plugin, the callback and ansible's
option handling are the real ones.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import io
import itertools
import json
import os
import socket
import traceback
import types
import typing as t
from unittest import mock
from urllib.error import HTTPError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible import context
from ansible.errors import AnsibleError
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.plugins.loader import callback_loader

from ansible_collections.temperstack.alerting.plugins.action import alert as alert_action
from ansible_collections.temperstack.alerting.plugins.callback import playbook_alerts
from ansible_collections.temperstack.alerting.plugins.plugin_utils import _client
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._outbox_sender import FlushReport
from ansible_collections.temperstack.alerting.plugins.plugin_utils._run_units import NO_LOG_MESSAGE
from ansible_collections.temperstack.alerting.tests.unit.fakes import FakeDisplay, FakeResponse

from faultlib import CALLBACK, FULL, SECRET_KEY, contract_violations, pick

BASE_URL = 'https://temperstack.example.test'
MODULE_EXAMPLES = pick(400, 10000)
SETTINGS_EXAMPLES = pick(150, 3000)
MESSAGE_EXAMPLES = pick(200, 3000)
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=not FULL,  # quick: the same cases on every CI run; full: new ones each time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    print_blob=True,
)

# -- values -------------------------------------------------------------------------------------------------

SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ODD = st.sampled_from(list('\x00\x01\x07\x08\x1b\x7f\x85\xa0\r\n\t\u2028\u2029\u202e\ufeff\ufffd{}%$"\\\'<>&'))
CHAR = st.one_of(st.characters(), ODD, SURROGATE)
TEXT = st.text(CHAR, max_size=40)
TEMPLATES = st.one_of(
    st.sampled_from([
        "{{ lookup('env', 'HOME') }}", "{{ 7 * 7 }}", '{% for x in y %}', '{# c #}', '{{', '}}', '${HOME}', '$(id)',
        '%s%n%x', '{0}{1}', '{{ api_key }}', "{{ lookup('pipe', 'id') }}", '!unsafe', '!vault |',
    ]),
    st.builds(lambda inner: '{{ ' + inner + ' }}', TEXT),
)
HUGE = st.builds(
    lambda char, size: char * size,
    st.sampled_from(['x', '\x00', '\u00e9', '\U0001f600', '"', '\\', '\u2028', '\ud800']),
    st.sampled_from([1000, 20000, 65535, 65536, 65537, 70000]),
)
NUMBERS = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10 ** 30), 10 ** 30))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, TEMPLATES)
NESTED = st.recursive(
    SCALARS, lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)),
    max_leaves=8,
)
ANY = st.one_of(SCALARS, NESTED, HUGE, st.binary(max_size=16))


def either(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value about four times in five, an invalid one otherwise (Hypothesis favours the first of a
    one_of and small integers, so the odds are drawn from an integer whose smallest values mean valid)."""
    return st.integers(0, 4).flatmap(lambda roll: invalid if roll == 4 else valid)


def sometimes(some: st.SearchStrategy) -> st.SearchStrategy:
    """``some`` (a list) about one time in six, an empty list otherwise."""
    return st.integers(0, 5).flatmap(lambda roll: some if roll == 5 else st.just([]))


def mostly(valid: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """``valid`` most of the time, anything at all otherwise."""
    return st.one_of(*([valid] * weight), ANY)


URLS = st.sampled_from([
    'https://wiki.example.com/runbooks/disk', 'http://[::1]:8080/x?y=1#z', 'HTTPS://EXAMPLE.COM', 'ftp://example.com/',
    'https://', 'javascript:alert(1)', '//example.com/x', 'https://user:pw@example.com/', 'https://exa mple.com/',
    'http://[::1', 'https://example.com:99999/',
])
STATUSES = st.sampled_from(['Alarm', 'OK', 'alarm', 'ok', 'ALARM', ' OK ', 'Ok', 'Resolved', '', ' ', 'Alarm\x00'])
PRIORITIES = st.sampled_from(['Critical', 'Medium', 'critical', 'MEDIUM', 'High', '', None])


@contextlib.contextmanager
def tls_material(directory: str) -> t.Iterator[dict[str, str]]:
    os.makedirs(directory, exist_ok=True)
    garbage = os.path.join(directory, 'garbage.pem')
    with open(garbage, 'w', encoding='utf-8') as handle:
        handle.write('-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n')
    yield {'garbage': garbage, 'missing': os.path.join(directory, 'missing.pem'), 'directory': directory}


# -- the module --------------------------------------------------------------------------------------------


class ContractOpener:
    """open_url for the fuzz: builds the real TLS context, checks the body as the stand-in would, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.violations: list[list[str]] = []

    def __call__(self, url: str, **kwargs: t.Any) -> t.Any:
        # The real opener's first steps: a bad ca_path fails here, and a socket takes the timeout.
        with socket.socket() as probe:
            probe.settimeout(kwargs['timeout'])
        _client._tls_context(url.lower().startswith('https:'), kwargs['validate_certs'], kwargs.get('ca_path'))  # pylint: disable=protected-access
        body = kwargs['data']
        self.bodies.append(body)
        errors = contract_violations(kwargs['headers'].get('Content-Type'), body)
        if errors:
            self.violations.append(errors)
            raise HTTPError(url, 400, 'Bad Request', http.client.HTTPMessage(), io.BytesIO(json.dumps(errors).encode()))
        return FakeResponse(body=b'{"status": "success"}')


def run_action(args: dict[str, t.Any], opener: ContractOpener, check_mode: bool, diff: bool) -> dict[str, t.Any]:
    task = mock.MagicMock(Task)
    task.args = dict(args)
    task.action = 'temperstack.alerting.alert'
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = diff
    connection = mock.MagicMock()
    connection._shell.tmpdir = None  # pylint: disable=protected-access
    plugin = alert_action.ActionModule(task, connection, PlayContext(), loader=DataLoader(), templar=None, shared_loader_obj=None)
    client = _client.TemperstackClient

    def make_client(*c_args: t.Any, **c_kwargs: t.Any) -> t.Any:
        return client(*c_args, opener=opener, sleep=lambda seconds: None, **c_kwargs)

    with mock.patch.object(alert_action, 'TemperstackClient', make_client):
        return plugin.run(task_vars={})


OPTIONS = list(alert_action.ARGUMENT_SPEC)
_LEDGERS = itertools.count(1)


def fresh_ledger(directory: str) -> str:
    """A ledger of its own for each example, so what one example sent never makes another one idempotent."""
    return os.path.join(directory, f'ledger-{next(_LEDGERS)}.sqlite3')


def module_args(tmp: str, tls: dict[str, str]) -> st.SearchStrategy:
    """A task's arguments: every option plausible (free text of any kind), and up to three of them anything at all."""
    webhook = f'{BASE_URL}/api/integration/webhook/{SECRET_KEY}'
    free_text = st.one_of(TEXT.filter(str.strip), TEMPLATES, st.integers(), st.floats(allow_nan=False, allow_infinity=False), HUGE)
    plausible = {
        'alert_name': free_text,
        'status': either(st.sampled_from(['Alarm', 'OK', 'alarm', 'ok', 'ALARM', ' OK ', 'Ok']), STATUSES),
        'alert_priority': either(st.sampled_from(['Critical', 'Medium', 'critical', 'MEDIUM', None]), PRIORITIES),
        'alert_id': free_text,
        'description': free_text,
        'alert_url': URLS,
        'run_book_url': URLS,
        'metric_name': free_text,
        'resource_id': free_text,
        'resource_name': free_text,
        'resource_type': free_text,
        'webhook_url': either(st.just(webhook), st.sampled_from([webhook + '/x', webhook + '?k=' + SECRET_KEY, BASE_URL, 'ftp://x/api/integration/webhook/k'])),
        'api_key': either(st.just(SECRET_KEY), st.sampled_from([SECRET_KEY + ' x', 'a/b', ''])),
        'org': either(st.sampled_from(['acme', 'a-b']), st.sampled_from(['-x', 'a.b', 'x' * 70, ''])),
        'base_url': either(st.sampled_from([BASE_URL, BASE_URL + '/prefix/', 'http://[::1]:1']), st.sampled_from(['https://h?x=1', 'example.com', ''])),
        'timeout': either(st.sampled_from([1, 10, 3600, '5', 2.5]), st.sampled_from([0, -1, 3601, 10 ** 12, 'x', None])),
        'retries': either(st.sampled_from([0, 3, 10, '2']), st.sampled_from([11, -1, 10 ** 9, 'x', None])),
        'validate_certs': either(st.sampled_from([True, False, 'yes', 'no', 1]), st.sampled_from(['maybe', 2, None])),
        'ca_path': either(st.just(None), st.sampled_from([tls['garbage'], tls['missing'], tls['directory'], '~', '$HOME/x'])),
        'ledger_path': either(
            st.sampled_from([None, os.path.join(tmp, 'deep', 'er', 'ledger.sqlite3')]),
            st.one_of(st.just(tmp), st.builds(lambda name: os.path.join(tmp, 'named', name),
                                              st.text(CHAR.filter(lambda c: c != '/'), min_size=1, max_size=12))),
        ),
        'force': st.booleans(),
        'only_if_raised': st.booleans(),
    }
    connection = either(st.sampled_from([('webhook_url',), ('api_key', 'base_url'), ('api_key', 'org')]), st.sampled_from([(), ('webhook_url', 'api_key')]))

    @st.composite
    def build(draw):
        args: dict[str, t.Any] = {'alert_name': draw(free_text), 'status': draw(plausible['status'])}
        args['ledger_path'] = draw(plausible['ledger_path'])
        for name in draw(connection):
            args[name] = draw(plausible[name])
        others = [name for name in plausible if name not in ('webhook_url', 'api_key', 'org', 'base_url')]
        for name in draw(st.lists(st.sampled_from(others), max_size=8, unique=True)):
            args[name] = draw(plausible[name])
        for name in draw(sometimes(st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=2, unique=True))):
            args[name] = draw(ANY)
        for name in draw(sometimes(st.lists(st.sampled_from(['alert_title', 'severity', 'Status', 'api-key']), min_size=1, max_size=1))):
            args[name] = draw(ANY)
        for name in draw(sometimes(st.lists(st.sampled_from(['alert_name', 'status']), min_size=1, max_size=1))):
            del args[name]
        if draw(st.integers(0, 9)) == 9:
            args['alert_name'] = draw(st.one_of(HUGE, st.just(' \t\n')))
        if args.get('ledger_path') is None:
            args['ledger_path'] = fresh_ledger(tmp)
        return args

    return build()


def names_an_option(message: str, args: t.Mapping[str, t.Any]) -> bool:
    lowered = message.lower()
    return any(name in message for name in list(OPTIONS) + list(args)) or 'ledger' in lowered


def test_module_options(work_dir, monkeypatch, figures):
    # Inside the work directory, so that the leak scan reads every ledger the fuzz wrote.
    tmp = os.path.join(work_dir, 'fuzz-module')
    os.makedirs(tmp, exist_ok=True)
    monkeypatch.setenv('HOME', os.path.join(tmp, 'home'))
    for name in ('TEMPERSTACK_WEBHOOK_URL', 'TEMPERSTACK_API_KEY', 'TEMPERSTACK_ORG', 'TEMPERSTACK_BASE_URL'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('TEMPERSTACK_LEDGER_PATH', os.path.join(tmp, 'ledger', 'ledger.sqlite3'))
    counts: collections.Counter = collections.Counter()
    named: collections.Counter = collections.Counter()

    with tls_material(os.path.join(tmp, 'tls')) as tls:
        @settings(FUZZ, max_examples=MODULE_EXAMPLES)
        @given(args=module_args(tmp, tls), check_mode=st.booleans(), diff=st.booleans())
        def case(args, check_mode, diff):
            counts['cases'] += 1
            opener = ContractOpener()
            try:
                result = run_action(args, opener, check_mode, diff)
            except AnsibleError as exc:  # how a task reports argument-spec and unknown-option errors
                message = str(exc)
                assert names_an_option(message, args), f'error names no option: {message}'
                assert SECRET_KEY not in message
                assert not opener.bodies, 'a request was made before the input was rejected'
                counts['rejected by the argument spec'] += 1
                if os.environ.get('FUZZ_DEBUG'):
                    print('SPEC', message[:150])
                return
            shown = json.dumps(result, default=repr)
            assert SECRET_KEY not in shown, 'the key is in the task result'
            assert opener.violations == [], f'a request broke the contract: {opener.violations}'
            if result.get('failed'):
                assert names_an_option(result['msg'], args), f'error names no option: {result["msg"]}'
                assert not opener.bodies, 'a request was made before the input was rejected'
                counts['rejected with a message naming the option'] += 1
                if os.environ.get('FUZZ_DEBUG'):
                    print('MSG', result['msg'][:150])
                named[next((name for name in sorted(OPTIONS, key=len, reverse=True) if name in result['msg']), 'ledger')] += 1
                return
            assert result['status'] in ('Alarm', 'OK')
            if check_mode:
                assert opener.bodies == []
                counts['valid (check mode)'] += 1
            elif result['sent']:
                assert json.loads(opener.bodies[-1]) == result['payload']
                counts['valid payload sent'] += 1
            else:
                assert opener.bodies == []
                counts['valid, nothing to send (idempotent)'] += 1

        case()

    figures.set('fuzz', 'module', dict(counts))
    figures.set('fuzz', 'module_errors_by_option', dict(named))


# -- the callback's settings ----------------------------------------------------------------------------------


class ContractSenderProcess:
    """Stands in for the delivery process: drains the real outbox, checking every body as the stand-in would."""

    delivered: list[dict[str, str]] = []
    violations: list[list[str]] = []

    def __init__(
        self, client: t.Any, ledger_path: str, flush_timeout: float, run_token: str = '', fallback: str = '', unreachable: str = '',
    ) -> None:
        # What the real delivery process needs to work at all (a socket timeout, a thread join, a bounded wait).
        with socket.socket() as probe:
            probe.settimeout(client.timeout)
        assert 0 <= client.retries <= 10, client.retries
        assert 0 <= flush_timeout <= 3600, flush_timeout
        self.client = client
        self.ledger_path = ledger_path

    def notify(self) -> None:
        return None

    def flush(self, on_slow: t.Any = None) -> FlushReport:
        sent = []
        with SqliteLedger(self.ledger_path) as ledger:
            for queued in ledger.pending(self.client.endpoint.ledger_key):
                body = json.dumps(queued.alert.payload, ensure_ascii=False).encode('utf-8', 'surrogatepass')
                errors = contract_violations('application/json', body)
                if errors:
                    type(self).violations.append(errors)
                type(self).delivered.append(queued.alert.payload)
                ledger.delivered(self.client.endpoint.ledger_key, queued)
                sent.append(queued.alert.status)
        return FlushReport(sent, 0, [], True)


SETTING_ENV = {
    'scope': 'TEMPERSTACK_SCOPE',
    'alert_priority': 'TEMPERSTACK_ALERT_PRIORITY',
    'run_book_url': 'TEMPERSTACK_RUN_BOOK_URL',
    'alert_url': 'TEMPERSTACK_ALERT_URL',
    'resource_type': 'TEMPERSTACK_RESOURCE_TYPE',
    'alert_id_prefix': 'TEMPERSTACK_ALERT_ID_PREFIX',
    'check_mode_alerts': 'TEMPERSTACK_CHECK_MODE_ALERTS',
    'flush_timeout': 'TEMPERSTACK_FLUSH_TIMEOUT',
    'max_error_chars': 'TEMPERSTACK_MAX_ERROR_CHARS',
    'timeout': 'TEMPERSTACK_TIMEOUT',
    'retries': 'TEMPERSTACK_RETRIES',
    'validate_certs': 'TEMPERSTACK_VALIDATE_CERTS',
    'ca_path': 'TEMPERSTACK_CA_PATH',
    'webhook_url': 'TEMPERSTACK_WEBHOOK_URL',
    'org': 'TEMPERSTACK_ORG',
}
# What an environment variable can hold: no NUL, and only the surrogates that stand for undecodable bytes.
ENV_CHAR = st.one_of(
    st.characters(exclude_categories=('Cs',), exclude_characters='\x00'),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    ODD.filter(lambda c: c != '\x00'),
)
ENV_TEXT = st.one_of(
    st.text(ENV_CHAR, max_size=30),
    st.sampled_from(['inf', '-inf', 'nan', '-1', '0', '0.0', '1e400', '1e-9', '99999999999999999999', ' 5 ', 'true', 'off', '']),
    TEMPLATES.filter(lambda s: '\x00' not in s and not any(0xD800 <= ord(c) <= 0xDC7F or 0xDD00 <= ord(c) <= 0xDFFF for c in s)),
)
SETTING_VALUES = {
    'scope': either(st.sampled_from(['play', 'host', 'playbook']), st.sampled_from(['Play', 'hosts', ''])),
    'alert_priority': either(st.sampled_from(['Critical', 'Medium']), st.sampled_from(['critical', 'High', ''])),
    'run_book_url': URLS,
    'alert_url': URLS,
    'check_mode_alerts': either(st.sampled_from(['false', 'no', '0', 'False']), st.sampled_from(['maybe', '2', ''])),
    'validate_certs': either(st.sampled_from(['true', 'yes', '1']), st.sampled_from(['maybe', '2'])),
    'flush_timeout': either(st.sampled_from(['0', '0.5', '30', '3600']), st.sampled_from(['-1', 'inf', 'nan', '1e400', '3601', 'x'])),
    'max_error_chars': either(st.sampled_from(['1', '300', '10000000']), st.sampled_from(['0', '-5', 'inf', 'x'])),
    'timeout': either(st.sampled_from(['1', '10', '3600']), st.sampled_from(['0', '-1', '3601', '99999999999999999999', 'x'])),
    'retries': either(st.sampled_from(['0', '3', '10']), st.sampled_from(['11', '-1', '1000000000', 'x'])),
    'resource_type': st.one_of(ENV_TEXT, st.just('deployment')),
    'alert_id_prefix': st.one_of(ENV_TEXT, st.just('team-x')),
    'ca_path': st.just(''),
}


def setting_envs() -> st.SearchStrategy:
    """Up to five settings, each most often a plausible value, sometimes any text at all."""

    @st.composite
    def build(draw):
        chosen = {}
        for name in draw(st.lists(st.sampled_from(list(SETTING_ENV)), max_size=5, unique=True)):
            specific = SETTING_VALUES.get(name)
            chosen[name] = draw(either(specific, ENV_TEXT) if specific is not None else ENV_TEXT)
        return chosen

    return build()


@contextlib.contextmanager
def callback_run(env: t.Mapping[str, str], cliargs: t.Mapping[str, t.Any] | None = None):
    """The environment of one ansible-playbook run, for a callback made by ansible's plugin loader."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith('TEMPERSTACK_') or name in ('AWX_HOST', 'JOB_ID'):
                del os.environ[name]
        os.environ.update(env)
        base = {'check': False, 'tags': ('all',), 'skip_tags': (), 'start_at_task': None, 'step': False, 'subset': None}
        with mock.patch.object(context, 'CLIARGS', ImmutableDict({**base, **(cliargs or {})})), \
                mock.patch.object(playbook_alerts, 'SenderProcess', ContractSenderProcess):
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def new_callback() -> t.Any:
    callback = callback_loader.get(CALLBACK)
    callback._display = FakeDisplay()  # pylint: disable=protected-access
    return callback


def drive(callback: t.Any, failures: list[tuple[str, str, dict[str, t.Any], bool, bool]], playbook: str = '/srv/site.yml') -> None:
    """One play in which each (host, task, result, no_log, unreachable) fails, then the end of the run.

    Ansible sends no event to a callback that disabled itself.
    """
    if callback.disabled:
        return
    callback.v2_playbook_on_start(types.SimpleNamespace(_file_name=playbook))
    play = types.SimpleNamespace(name='Deploy web tier', _uuid='u1', _removed_hosts=[])
    callback.v2_playbook_on_play_start(play)
    for host, task_name, data, no_log, unreachable in failures:
        task = types.SimpleNamespace(name=task_name, action='ansible.builtin.command', no_log=no_log,
                                     ignore_unreachable=False, get_name=lambda name=task_name: name)
        result = types.SimpleNamespace(host=types.SimpleNamespace(get_name=lambda name=host: name), task=task, result=data)
        play._removed_hosts.append(host)
        if unreachable:
            callback.v2_runner_on_unreachable(result)
        else:
            callback.v2_runner_on_failed(result)
    callback.v2_playbook_on_stats(object())


def test_callback_settings(work_dir, figures):
    counts: collections.Counter = collections.Counter()
    ledger_dir = os.path.join(work_dir, 'fuzz-callback-settings')
    tls_dir = os.path.join(ledger_dir, 'tls')

    with tls_material(tls_dir) as tls:
        @settings(FUZZ, max_examples=SETTINGS_EXAMPLES)
        @given(settings_env=setting_envs(), ca=st.sampled_from([None, tls['garbage'], tls['missing']]))
        def case(settings_env, ca):
            counts['cases'] += 1
            env = {SETTING_ENV[name]: value for name, value in settings_env.items()}
            env.setdefault('TEMPERSTACK_API_KEY', SECRET_KEY)
            if 'TEMPERSTACK_WEBHOOK_URL' not in env and 'TEMPERSTACK_ORG' not in env:
                env['TEMPERSTACK_BASE_URL'] = BASE_URL
            if ca is not None:
                env['TEMPERSTACK_CA_PATH'] = ca
            env['TEMPERSTACK_LEDGER_PATH'] = fresh_ledger(ledger_dir)
            ContractSenderProcess.delivered, ContractSenderProcess.violations = [], []
            with callback_run(env):
                callback = new_callback()
                try:
                    callback.set_options()
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    # ansible-playbook turns any error here into "Failed to load callback plugin ...: <message>"
                    # and runs on without the callback. Ours name the option; ansible-core's own type conversion
                    # does, but for an int option set to 'inf' (OverflowError), which it reports without the name.
                    message = str(exc)
                    assert SECRET_KEY not in message
                    origin = traceback.extract_tb(exc.__traceback__)[-1].filename
                    if isinstance(exc, AnsibleError):
                        assert any(name in message for name in SETTING_ENV) or any(var in message for var in env), message
                        counts['refused by ansible-core (type or choice), naming the option; run unchanged'] += 1
                    else:
                        assert f'{os.sep}ansible{os.sep}config{os.sep}' in origin, f'{type(exc).__name__} from {origin}: {message}'
                        counts[f'refused by ansible-core without naming the option ({message}); run unchanged'] += 1
                    return
                drive(callback, [('web1', 'Release', {'msg': 'the release failed'}, False, False)])
            warnings = callback._display.warnings  # pylint: disable=protected-access
            assert all(SECRET_KEY not in w for w in warnings)
            assert ContractSenderProcess.violations == []
            if callback.disabled and not ContractSenderProcess.delivered:
                assert len(warnings) == 1, warnings
                assert any(name in warnings[0] for name in list(SETTING_ENV) + ['api_key', 'base_url', 'endpoint']), warnings[0]
                counts['disabled with one warning naming the option'] += 1
                return
            assert [p['status'] for p in ContractSenderProcess.delivered] == ['Alarm']
            assert not [w for w in warnings if 'Traceback' in w or 'dispatch' in w]
            counts['valid Alarm queued'] += 1

        case()

    figures.set('fuzz', 'callback_settings', dict(counts))


# -- task results of any shape -------------------------------------------------------------------------------

PASSWORDS = st.text(st.sampled_from('abcXYZ019-._~!$&\'()*+,;=:@%'), min_size=1, max_size=10)


def secret_url(user: str, password: str, token: str) -> str:
    return f'https://{user}:{token}{password}@git.example.com/repo.git'


RESULT_ITEM = st.one_of(ANY, st.fixed_dictionaries({}, optional={
    'failed': st.booleans(), 'msg': ANY, 'stderr': ANY, '_ansible_no_log': st.booleans(), 'censored': TEXT,
}))
RESULTS = st.fixed_dictionaries({}, optional={
    'msg': st.one_of(ANY, ANY, HUGE),
    'stderr': ANY,
    'module_stderr': ANY,
    'results': st.lists(RESULT_ITEM, max_size=4),
    '_ansible_no_log': st.booleans(),
    'censored': TEXT,
    'rc': st.integers(),
})


@st.composite
def failures(draw):
    count = draw(st.integers(1, 6))
    made = []
    tokens = []
    for index in range(count):
        host = draw(st.one_of(st.just(f'web{index}'), st.text(CHAR, min_size=1, max_size=20)))
        task_name = draw(st.one_of(TEXT, HUGE, st.just('')))
        data = draw(RESULTS)
        token = f'PWTOKEN{index}x'
        if draw(st.booleans()):
            # A URL with credentials inside the message (and sometimes in the task's name): they must be masked.
            url = secret_url(draw(st.text(st.sampled_from('abc-_.~'), min_size=1, max_size=6)), draw(PASSWORDS), token)
            where = draw(st.sampled_from(['msg', 'stderr', 'task']))
            if where == 'task':
                task_name = f'Clone {url}'
            else:
                data = dict(data, **{where: f'{draw(TEXT)} fatal: could not read {url}: {draw(TEXT)}'})
                data.pop('msg' if where == 'stderr' else 'stderr', None)
            tokens.append(token)
        if draw(st.booleans()):
            webhook_key = f'WEBHOOKKEY{index}z'
            data = dict(data, msg=f'POST https://x.temperstack.com/api/integration/webhook/{webhook_key} failed')
            tokens.append(webhook_key)
        made.append((host, task_name, data, draw(st.booleans()) and index % 3 == 0, draw(st.booleans()) and index % 4 == 1))
    return made, tokens


def test_task_errors_of_any_shape(work_dir, figures):
    counts: collections.Counter = collections.Counter()
    ledger_dir = os.path.join(work_dir, 'fuzz-task-errors')

    @settings(FUZZ, max_examples=MESSAGE_EXAMPLES)
    @given(made=failures(), scope=st.sampled_from(['play', 'host', 'playbook']), max_chars=st.sampled_from([1, 20, 300, 100000]))
    def case(made, scope, max_chars):
        counts['cases'] += 1
        failed, tokens = made
        counts['task results'] += len(failed)
        env = {
            'TEMPERSTACK_API_KEY': SECRET_KEY, 'TEMPERSTACK_BASE_URL': BASE_URL, 'TEMPERSTACK_SCOPE': scope,
            'TEMPERSTACK_MAX_ERROR_CHARS': str(max_chars),
            'TEMPERSTACK_LEDGER_PATH': fresh_ledger(ledger_dir),
        }
        ContractSenderProcess.delivered, ContractSenderProcess.violations = [], []
        with callback_run(env):
            callback = new_callback()
            callback.set_options()
            drive(callback, failed)
        warnings = callback._display.warnings  # pylint: disable=protected-access
        assert warnings == []
        assert ContractSenderProcess.violations == []
        assert ContractSenderProcess.delivered, 'no Alarm for a failed play'
        assert {p['status'] for p in ContractSenderProcess.delivered} == {'Alarm'}
        bodies = json.dumps(ContractSenderProcess.delivered, ensure_ascii=False)
        for token in tokens:
            assert token not in bodies, f'{token} (a URL credential or webhook key) reached an alert'
        for host, _task, data, no_log, _unreachable in failed:
            if no_log and isinstance(data.get('msg'), str) and len(data['msg']) > 12:
                assert data['msg'] not in bodies, 'the message of a no_log task reached an alert'
        if max_chars >= len(NO_LOG_MESSAGE) and len(failed) < 4 and any(no_log for *_rest, no_log, _u in failed):
            assert NO_LOG_MESSAGE in bodies
        counts['valid Alarms'] += len(ContractSenderProcess.delivered)
        counts['credentials masked'] += len(tokens)

    case()
    figures.set('fuzz', 'task_errors', dict(counts))


@pytest.mark.parametrize('char', ['x', '\x00', '\U0001f600', '\ud800'])
def test_every_field_at_its_limit(tmp_path, monkeypatch, char, figures):
    """The largest alert the module accepts (every field at its limit, the costliest characters) is a valid body."""
    monkeypatch.setenv('HOME', str(tmp_path))
    limit = alert_action.build_alert.__globals__['MAX_FIELD_CHARS']
    big = char * limit
    args = {name: big for name in ('alert_name', 'alert_id', 'description', 'metric_name', 'resource_id', 'resource_name', 'resource_type')}
    args.update(status='Alarm', alert_priority='Medium', alert_url='https://e.com/' + 'x' * (limit - 14),
                run_book_url='https://e.com/' + 'y' * (limit - 14), webhook_url=f'{BASE_URL}/api/integration/webhook/{SECRET_KEY}',
                ledger_path=str(tmp_path / 'ledger.sqlite3'))
    opener = ContractOpener()
    result = run_action(args, opener, check_mode=False, diff=False)
    assert opener.violations == []
    if result.get('failed'):
        assert names_an_option(result['msg'], args), result['msg']
        assert not opener.bodies
    else:
        assert result['sent'] and len(opener.bodies) == 1
    figures.add('fuzz', 'limits', {'char': repr(char), 'failed': bool(result.get('failed')), 'bytes': len(opener.bodies[0]) if opener.bodies else 0})
