# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import (
    DEFAULT_INTEGRATION,
    ENV_VARS,
    MASK,
    NO_INTEGRATION,
    Endpoint,
    EndpointError,
    IntegrationNotConfigured,
    configured_integrations,
    integration_name,
    integration_suffix,
    integration_variables,
    mask_url_secrets,
    resolve_endpoint,
    resolve_integration,
)

KEY = 'tsk-LEAKCANARY-7f3e9a21c4b8d605'
OTHER_KEY = 'tsk-OTHERKEY-0011223344556677'
ORG_URL = f'https://acme.temperstack.com/api/integration/webhook/{KEY}'
BASE = 'https://temperstack.example.com'
BASE_URL = f'{BASE}/api/integration/webhook/{KEY}'
EXAMPLE_WEBHOOK = 'https://example.temperstack.com/api/integration/webhook/' + OTHER_KEY


def env(**values: str) -> dict[str, str]:
    """An environ dict from option names: env(api_key='k') == {'TEMPERSTACK_API_KEY': 'k'}."""
    return {ENV_VARS[name]: value for name, value in values.items()}


def endpoint_error(options, environ=None) -> str:
    with pytest.raises(EndpointError) as info:
        resolve_endpoint(options, environ={} if environ is None else environ)
    message = str(info.value)
    assert KEY not in message and OTHER_KEY not in message
    return message


# -- every way of connecting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ('options', 'environ', 'url'),
    [
        pytest.param({'webhook_url': ORG_URL}, {}, ORG_URL, id='webhook_url'),
        pytest.param({}, env(webhook_url=ORG_URL), ORG_URL, id='env-webhook_url'),
        pytest.param({'api_key': KEY, 'org': 'acme'}, {}, ORG_URL, id='api_key+org'),
        pytest.param({}, env(api_key=KEY, org='acme'), ORG_URL, id='env-api_key+org'),
        pytest.param({'api_key': KEY, 'base_url': BASE}, {}, BASE_URL, id='api_key+base_url'),
        pytest.param({}, env(api_key=KEY, base_url=BASE), BASE_URL, id='env-api_key+base_url'),
        pytest.param({'api_key': KEY}, env(org='acme'), ORG_URL, id='api_key+env-org'),
        pytest.param({'api_key': KEY}, env(base_url=BASE), BASE_URL, id='api_key+env-base_url'),
        pytest.param({'org': 'acme'}, env(api_key=KEY), ORG_URL, id='org+env-api_key'),
        pytest.param({'base_url': BASE}, env(api_key=KEY), BASE_URL, id='base_url+env-api_key'),
        # Options on the task decide the way of connecting; the environment only fills gaps.
        pytest.param(
            {'webhook_url': ORG_URL}, env(api_key=OTHER_KEY, org='other', base_url=BASE), ORG_URL,
            id='webhook_url-beats-env-api_key',
        ),
        pytest.param(
            {'api_key': KEY, 'org': 'acme'}, env(webhook_url=EXAMPLE_WEBHOOK), ORG_URL,
            id='api_key+org-beat-env-webhook_url',
        ),
        pytest.param({'api_key': KEY, 'org': 'acme'}, env(api_key=OTHER_KEY, org='other'), ORG_URL, id='options-beat-env'),
        pytest.param({'api_key': KEY}, env(api_key=OTHER_KEY, org='acme'), ORG_URL, id='api_key-beats-env-api_key'),
        pytest.param({'org': 'acme'}, env(api_key=KEY, base_url=BASE), ORG_URL, id='org-beats-env-base_url'),
        pytest.param({'base_url': BASE}, env(api_key=KEY, org='other'), BASE_URL, id='base_url-beats-env-org'),
        # Blank options count as unset.
        pytest.param({'webhook_url': '', 'api_key': '  ', 'org': None}, env(webhook_url=ORG_URL), ORG_URL, id='blank-options'),
        pytest.param({}, {**env(webhook_url=ORG_URL), **env(api_key='  ')}, ORG_URL, id='blank-env'),
        pytest.param({'webhook_url': f'  {ORG_URL}\n'}, {}, ORG_URL, id='webhook_url-stripped'),
    ],
)
def test_resolves_every_way_of_connecting(options, environ, url):
    endpoint = resolve_endpoint(options, environ=environ)
    assert endpoint.url == url
    assert KEY not in endpoint.masked_url
    assert KEY not in repr(endpoint)


def test_environ_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv('TEMPERSTACK_API_KEY', KEY)
    monkeypatch.setenv('TEMPERSTACK_ORG', 'acme')
    assert resolve_endpoint({}).url == ORG_URL


def test_org_is_lowercased_into_the_host():
    assert resolve_endpoint({'api_key': KEY, 'org': 'ACME-Prod'}, environ={}).url.startswith('https://acme-prod.temperstack.com/')


@pytest.mark.parametrize(
    ('base_url', 'url'),
    [
        ('https://temperstack.example.com/', BASE_URL),
        ('http://127.0.0.1:8080', f'http://127.0.0.1:8080/api/integration/webhook/{KEY}'),
        ('https://proxy.example.com/temperstack/', f'https://proxy.example.com/temperstack/api/integration/webhook/{KEY}'),
    ],
)
def test_base_url_forms(base_url, url):
    assert resolve_endpoint({'api_key': KEY, 'base_url': base_url}, environ={}).url == url


def test_webhook_url_with_trailing_slash():
    endpoint = resolve_endpoint({'webhook_url': ORG_URL + '/'}, environ={})
    assert KEY not in endpoint.masked_url


# -- conflicts and missing parts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ('options', 'environ', 'expected'),
    [
        pytest.param({'webhook_url': ORG_URL, 'api_key': KEY}, {}, 'webhook_url and api_key are mutually exclusive (both set in options)',
                     id='webhook_url+api_key'),
        pytest.param({'webhook_url': ORG_URL, 'org': 'acme'}, {}, 'webhook_url and org are mutually exclusive (both set in options)',
                     id='webhook_url+org'),
        pytest.param({'webhook_url': ORG_URL, 'base_url': BASE}, {}, 'webhook_url and base_url are mutually exclusive',
                     id='webhook_url+base_url'),
        pytest.param({'webhook_url': ORG_URL, 'api_key': KEY, 'org': 'acme'}, {}, 'webhook_url and api_key, org are mutually exclusive',
                     id='webhook_url+api_key+org'),
        pytest.param({'api_key': KEY, 'org': 'acme', 'base_url': BASE}, {}, 'org and base_url are mutually exclusive (both set in options)',
                     id='org+base_url'),
        pytest.param({}, env(webhook_url=ORG_URL, api_key=KEY), 'webhook_url and api_key are mutually exclusive (both set in environment)',
                     id='env-webhook_url+api_key'),
        pytest.param({}, env(webhook_url=ORG_URL, org='acme'), 'webhook_url and org are mutually exclusive (both set in environment)',
                     id='env-webhook_url+org'),
        pytest.param({}, env(api_key=KEY, org='acme', base_url=BASE), 'org and base_url are mutually exclusive (both set in environment)',
                     id='env-org+base_url'),
        pytest.param({'api_key': KEY}, env(org='acme', base_url=BASE),
                     'org and base_url are mutually exclusive (both set in options and environment)', id='api_key+env-org+base_url'),
    ],
)
def test_conflicts_name_the_options(options, environ, expected):
    message = endpoint_error(options, environ)
    assert expected in message
    # Every error says how to connect, with the environment variables.
    for name, variable in ENV_VARS.items():
        assert name in message and variable in message


@pytest.mark.parametrize(
    ('options', 'environ', 'expected'),
    [
        pytest.param({}, {}, 'no Temperstack endpoint is configured', id='nothing'),
        pytest.param({'api_key': KEY}, {}, 'api_key given without org or base_url', id='api_key'),
        pytest.param({}, env(api_key=KEY), 'api_key given without org or base_url', id='env-api_key'),
        pytest.param({'org': 'acme'}, {}, 'org given without api_key', id='org'),
        pytest.param({'base_url': BASE}, {}, 'base_url given without api_key', id='base_url'),
        pytest.param({}, env(org='acme'), 'org given without api_key', id='env-org'),
        pytest.param({}, env(base_url=BASE), 'base_url given without api_key', id='env-base_url'),
        # An explicit org means api_key+org is meant, so a webhook URL in the environment does not help.
        pytest.param({'org': 'acme'}, env(webhook_url=ORG_URL), 'org given without api_key', id='org+env-webhook_url'),
    ],
)
def test_missing_parts_name_the_options(options, environ, expected):
    message = endpoint_error(options, environ)
    assert expected in message
    assert 'webhook_url (TEMPERSTACK_WEBHOOK_URL)' in message
    assert 'api_key (TEMPERSTACK_API_KEY)' in message


@pytest.mark.parametrize(
    'url',
    [
        f'ftp://acme.temperstack.com/api/integration/webhook/{KEY}',
        f'acme.temperstack.com/api/integration/webhook/{KEY}',
        f'https:///api/integration/webhook/{KEY}',
    ],
)
def test_webhook_url_must_be_http(url):
    message = endpoint_error({'webhook_url': url})
    assert message.startswith('webhook_url must be an http:// or https:// URL')


@pytest.mark.parametrize(
    'url',
    [
        f'https://acme.temperstack.com/api/other/{KEY}',
        'https://acme.temperstack.com/api/integration/webhook/',
        f'https://acme.temperstack.com/api/integration/webhook/{KEY}/extra',
        f'https://acme.temperstack.com/{KEY}',
    ],
)
def test_webhook_url_must_be_the_integration_url(url):
    message = endpoint_error({'webhook_url': url})
    assert message.startswith('webhook_url must be the integration URL Temperstack shows')
    assert 'https://acme.temperstack.com' in message


def test_webhook_url_with_malformed_port():
    assert endpoint_error({'webhook_url': f'https://acme.temperstack.com:99999/api/integration/webhook/{KEY}'}) == (
        'webhook_url is not a valid URL'
    )


@pytest.mark.parametrize('org', ['ac me', 'acme.example.com', '-acme', 'acme-', 'a_b', 'x' * 64, 'acme/evil'])
def test_bad_org(org):
    message = endpoint_error({'api_key': KEY, 'org': org})
    assert message.startswith('org must be the organisation name')
    assert repr(org) in message


@pytest.mark.parametrize('api_key', ['two words', 'key/with/slashes', 'tab\tkey'])
def test_bad_api_key(api_key):
    message = endpoint_error({'api_key': api_key, 'org': 'acme'})
    assert message.startswith('api_key must be the integration key alone')
    assert api_key not in message


@pytest.mark.parametrize(
    ('base_url', 'expected'),
    [
        ('ftp://temperstack.example.com', 'base_url must be an http:// or https:// URL'),
        ('temperstack.example.com', 'base_url must be an http:// or https:// URL'),
        ('https://temperstack.example.com/?x=1', 'base_url must not have a query or fragment'),
        ('https://temperstack.example.com/#top', 'base_url must not have a query or fragment'),
        ('https://temperstack.example.com:http', 'base_url is not a valid URL'),
    ],
)
def test_bad_base_url(base_url, expected):
    assert endpoint_error({'api_key': KEY, 'base_url': base_url}).startswith(expected)


@pytest.mark.parametrize('option', ['webhook_url', 'api_key', 'org', 'base_url'])
@pytest.mark.parametrize('value', [42, True, ['x'], {'x': 'y'}])
def test_non_string_option_rejected(option, value):
    options = {'api_key': KEY, 'org': 'acme'} if option == 'webhook_url' else {}
    options[option] = value
    with pytest.raises(EndpointError, match='must be strings'):
        resolve_endpoint(options, environ={})


# -- masking --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('options', 'masked'),
    [
        ({'webhook_url': ORG_URL}, f'https://acme.temperstack.com/api/integration/webhook/{MASK}'),
        ({'api_key': KEY, 'org': 'acme'}, f'https://acme.temperstack.com/api/integration/webhook/{MASK}'),
        ({'api_key': KEY, 'base_url': BASE}, f'{BASE}/api/integration/webhook/{MASK}'),
    ],
)
def test_masked_url_hides_the_key(options, masked):
    endpoint = resolve_endpoint(options, environ={})
    assert endpoint.masked_url == masked
    assert repr(endpoint) == f'Endpoint({masked!r})'


def test_mask_hides_every_occurrence_of_the_key(endpoint):
    text = f'key {KEY} was rejected; {KEY}! ({KEY.upper()} is another string)'
    masked = endpoint.mask(text)
    assert KEY not in masked
    assert masked == f'key {MASK} was rejected; {MASK}! ({KEY.upper()} is another string)'


def test_mask_hides_the_url_quoted_key():
    key = 'tsk+LEAK=CANARY&x%y'
    endpoint = resolve_endpoint({'api_key': key, 'org': 'acme'}, environ={})
    quoted = quote(key, safe='')
    assert quoted != key and quoted in endpoint.url
    assert key not in endpoint.masked_url and quoted not in endpoint.masked_url
    masked = endpoint.mask(f'raw {key} quoted {quoted} url {endpoint.url}')
    assert key not in masked and quoted not in masked
    assert masked == f'raw {MASK} quoted {MASK} url https://acme.temperstack.com/api/integration/webhook/{MASK}'


def test_webhook_url_userinfo_query_and_key_all_masked():
    url = f'https://alerts:PaSsWoRd@acme.temperstack.com/api/integration/webhook/{KEY}?token=QuErYsEcReT'
    endpoint = resolve_endpoint({'webhook_url': url}, environ={})
    for secret in (KEY, 'PaSsWoRd', 'QuErYsEcReT', 'alerts:'):
        assert secret not in endpoint.masked_url
        assert secret not in endpoint.mask(f'echo: {url}')
    assert endpoint.masked_url.startswith(f'https://{MASK}@acme.temperstack.com/')


def test_mask_hides_webhook_keys_of_any_endpoint(endpoint):
    # A server (or proxy) echoing another integration URL must not leak that key either.
    masked = endpoint.mask(f'forwarded to {EXAMPLE_WEBHOOK} and /api/integration/webhook/{OTHER_KEY}?x=1')
    assert OTHER_KEY not in masked
    assert masked == (
        f'forwarded to https://example.temperstack.com/api/integration/webhook/{MASK} '
        f'and /api/integration/webhook/{MASK}?x=1'
    )


@pytest.mark.parametrize(
    ('text', 'masked'),
    [
        ('https://user:pass@host.example.com/x', f'https://{MASK}@host.example.com/x'),
        ('see http://token@host/ and ftp://a:b@c/d', f'see http://{MASK}@host/ and ftp://{MASK}@c/d'),
        ('https://host.example.com/path?email=a@b.example', 'https://host.example.com/path?email=a@b.example'),
        ('mail ops@example.com now', 'mail ops@example.com now'),
        ('no secrets here', 'no secrets here'),
        (f'POST /api/integration/webhook/{KEY} HTTP/1.1', f'POST /api/integration/webhook/{MASK} HTTP/1.1'),
        (f'"/api/integration/webhook/{KEY}"', f'"/api/integration/webhook/{MASK}"'),
    ],
)
def test_mask_url_secrets(text, masked):
    assert mask_url_secrets(text) == masked


KEY_ALPHABET = st.characters(codec='ascii', categories=['L', 'N'], include_characters='-_.~+=')


@given(
    key=st.text(KEY_ALPHABET, min_size=8, max_size=40),
    before=st.text(),
    after=st.text(),
)
def test_key_never_survives_masking(key, before, after):
    endpoint = resolve_endpoint({'api_key': key, 'org': 'acme'}, environ={})
    assert key not in endpoint.masked_url
    masked = endpoint.mask(before + key + after + endpoint.url + quote(key, safe=''))
    assert key not in masked
    assert quote(key, safe='') not in masked


def test_endpoint_with_no_secrets_masks_only_url_credentials():
    endpoint = Endpoint('https://host.example.com/hook', secrets=['', None])
    assert endpoint.secrets == ()
    assert endpoint.mask('https://u:p@host.example.com/hook') == f'https://{MASK}@host.example.com/hook'


def test_longer_secrets_masked_first():
    # 'abc' inside 'abcdef' must not leave 'def' behind.
    endpoint = Endpoint('https://host/api/integration/webhook/abcdef', secrets=['abc', 'abcdef'])
    assert endpoint.mask('xx abcdef yy') == f'xx {MASK} yy'


# -- ledger identity ------------------------------------------------------------------------------


def test_ledger_key_is_a_hash_without_the_key(endpoint):
    assert re.fullmatch(r'[0-9a-f]{64}', endpoint.ledger_key)
    assert KEY not in endpoint.ledger_key


def test_ledger_key_identifies_the_url_however_it_was_given():
    by_url = resolve_endpoint({'webhook_url': ORG_URL}, environ={})
    by_parts = resolve_endpoint({'api_key': KEY, 'org': 'acme'}, environ={})
    by_env = resolve_endpoint({}, environ=env(api_key=KEY, org='acme'))
    assert by_url.ledger_key == by_parts.ledger_key == by_env.ledger_key


def test_ledger_key_differs_per_endpoint():
    keys = {
        resolve_endpoint({'api_key': KEY, 'org': 'acme'}, environ={}).ledger_key,
        resolve_endpoint({'api_key': OTHER_KEY, 'org': 'acme'}, environ={}).ledger_key,
        resolve_endpoint({'api_key': KEY, 'org': 'other'}, environ={}).ledger_key,
        resolve_endpoint({'api_key': KEY, 'base_url': BASE}, environ={}).ledger_key,
    }
    assert len(keys) == 4


@pytest.mark.parametrize(('options', 'environ', 'named'), [
    ({'api_key': 'k\udc80', 'org': 'acme'}, {}, 'api_key'),
    ({'webhook_url': 'https://acme.temperstack.com/api/integration/webhook/k\udcff'}, {}, 'webhook_url'),
    ({}, {'TEMPERSTACK_API_KEY': 'k\udc80', 'TEMPERSTACK_BASE_URL': 'https://alerts.example.com'}, 'api_key'),
])
def test_undecodable_bytes_in_connection_options_are_an_endpoint_error(options, environ, named):
    # Found by the fault suite (tests/faults): api_key given as bytes b'\x80' reached quote() as '\udc80' and
    # raised UnicodeEncodeError, a traceback in the task.
    with pytest.raises(EndpointError, match=f'^{named} contains bytes that are not valid UTF-8 text$'):
        resolve_endpoint(options, environ=environ)


def test_masking_a_long_text_takes_linear_time():
    """A 100,000-character error message once took 7 s per mask: the URL scheme pattern backtracked at every letter."""
    import time  # pylint: disable=import-outside-toplevel

    text = 'a' * 100_000 + ' https://user:pw@example.com/'
    started = time.monotonic()
    masked = mask_url_secrets(text)
    assert time.monotonic() - started < 0.5
    assert masked.endswith(f' https://{MASK}@example.com/')


# -- what a masked message still shows (issue 20) -----------------------------------------------------


@pytest.mark.parametrize(
    ('url', 'shown'),
    [
        pytest.param(
            f'acme.temperstack.com/api/integration/webhook/{KEY}',
            f'must be an http:// or https:// URL, got acme.temperstack.com/api/integration/webhook/{MASK}',
            id='no-scheme',
        ),
        pytest.param(
            f'ftp://acme.temperstack.com/api/integration/webhook/{KEY}',
            f'must be an http:// or https:// URL, got ftp://acme.temperstack.com/api/integration/webhook/{MASK}',
            id='ftp',
        ),
        pytest.param(
            f'https://alerts:PaSsWoRd@acme.temperstack.com/api/integration/webhook/{KEY}/extra?token=QuErY#frag',
            f'got https://{MASK}@acme.temperstack.com/api/integration/webhook/{MASK}/extra?{MASK}#{MASK}',
            id='extra-segment',
        ),
        pytest.param(
            'https://acme.temperstack.com/api/integration/webhook/',
            'got https://acme.temperstack.com/api/integration/webhook/',
            id='no-key',
        ),
        pytest.param(
            f'https://acme.temperstack.com/api/other/{KEY}',
            f'got https://acme.temperstack.com/api/{MASK}/{MASK}',
            id='not-the-webhook-path',
        ),
    ],
)
def test_errors_show_scheme_host_and_path_and_hide_the_key(url, shown):
    # Issue 20: "got /********" hid the host along with the key, so the missing scheme could not be seen.
    message = endpoint_error({'webhook_url': url})
    assert message.endswith(shown)
    for secret in ('PaSsWoRd', 'QuErY', 'frag'):
        assert secret not in message


def test_error_of_a_base_url_without_scheme_shows_its_host():
    message = endpoint_error({'api_key': KEY, 'base_url': 'temperstack.example.com/temperstack'})
    assert message == f'base_url must be an http:// or https:// URL, got temperstack.example.com/{MASK}'


SHORT_KEY_URL = 'http://127.0.0.1:8080/api/integration/webhook/k'


def test_short_key_masked_only_where_it_stands_alone():
    # Issue 20: with the key "k", messages read "webhoo********" and "un********nown integration ********ey".
    endpoint = resolve_endpoint({'webhook_url': SHORT_KEY_URL}, environ={})
    assert endpoint.masked_url == f'http://127.0.0.1:8080/api/integration/webhook/{MASK}'
    text = f'the webhook answered HTTP 404: unknown integration key; key k (k) at {SHORT_KEY_URL}?k=1'
    assert endpoint.mask(text) == (
        'the webhook answered HTTP 404: unknown integration key; '
        f'key {MASK} ({MASK}) at http://127.0.0.1:8080/api/integration/webhook/{MASK}?{MASK}=1'
    )


def test_short_url_quoted_key_masked_only_where_it_stands_alone():
    endpoint = resolve_endpoint({'api_key': 'a+b', 'org': 'acme'}, environ={})
    assert endpoint.mask('a+b and a%2Bb, but not ba+bc or xa%2Bby') == f'{MASK} and {MASK}, but not ba+bc or xa%2Bby'


@given(
    key=st.text(st.characters(codec='ascii', categories=['L', 'N']), min_size=1, max_size=7),
    word=st.text(st.characters(codec='ascii', categories=['L', 'N']), min_size=1, max_size=10),
)
def test_short_key_never_survives_alone_and_never_breaks_a_word(key, word):
    endpoint = resolve_endpoint({'api_key': key, 'org': 'acme'}, environ={})
    assert endpoint.mask(f'key {key}: {endpoint.url}') == (
        f'key {MASK}: https://acme.temperstack.com/api/integration/webhook/{MASK}'
    )
    inside = f'x{word}{key}{word}x'
    assert endpoint.mask(inside) == inside


# -- routing: integrations by name ------------------------------------------------------------------------------

PAYMENTS_URL = f'https://acme.temperstack.com/api/integration/webhook/{OTHER_KEY}'


@pytest.mark.parametrize('name, suffix', [
    ('payments', 'PAYMENTS'),
    ('payments-eu', 'PAYMENTS_EU'),
    ('Web.Tier 2', 'WEB_TIER_2'),
    ('db/primary', 'DB_PRIMARY'),
    ('été', '_T_'),
    (' db ', 'DB'),
])
def test_the_name_rule(name, suffix):
    assert integration_suffix(name) == suffix
    assert integration_variables(name) == (f'TEMPERSTACK_WEBHOOK_URL_{suffix}', f'TEMPERSTACK_API_KEY_{suffix}')


@given(st.text(min_size=1, max_size=30))
def test_the_name_rule_gives_only_letters_digits_and_underscores(name):
    assert re.fullmatch(r'[A-Z0-9_]*', integration_suffix(name))


def test_a_named_integration_takes_its_own_webhook_url():
    endpoint = resolve_integration('payments-eu', {}, {'TEMPERSTACK_WEBHOOK_URL_PAYMENTS_EU': PAYMENTS_URL,
                                                       'TEMPERSTACK_WEBHOOK_URL': ORG_URL})
    assert endpoint.url == PAYMENTS_URL
    assert endpoint.integration == 'payments-eu'
    assert endpoint.ledger_key == Endpoint(PAYMENTS_URL, [OTHER_KEY]).ledger_key


def test_a_named_integration_takes_its_key_with_the_usual_org_or_base_url():
    by_org = resolve_integration('db', {}, {'TEMPERSTACK_API_KEY_DB': OTHER_KEY, 'TEMPERSTACK_ORG': 'acme'})
    assert by_org.url == PAYMENTS_URL
    by_option = resolve_integration('db', {'base_url': BASE}, {'TEMPERSTACK_API_KEY_DB': OTHER_KEY, 'TEMPERSTACK_ORG': 'acme'})
    assert by_option.url == f'{BASE}/api/integration/webhook/{OTHER_KEY}'
    with pytest.raises(EndpointError, match='TEMPERSTACK_API_KEY_DB given without org or base_url'):
        resolve_integration('db', {}, {'TEMPERSTACK_API_KEY_DB': OTHER_KEY})


@pytest.mark.parametrize('name', [None, '', '  ', 'default', 'DEFAULT'])
def test_no_name_is_todays_endpoint_named_default(name):
    endpoint = resolve_integration(name, {}, env(webhook_url=ORG_URL))
    assert endpoint.url == ORG_URL
    assert endpoint.integration == DEFAULT_INTEGRATION == 'default'


@pytest.mark.parametrize('name', ['none', 'None', ' NONE '])
def test_none_alerts_nowhere(name):
    assert resolve_integration(name, {}, env(webhook_url=ORG_URL)) is None
    assert integration_name(name) == NO_INTEGRATION


def test_an_integration_without_url_or_key_names_the_variable():
    with pytest.raises(IntegrationNotConfigured) as info:
        resolve_integration('payments', {}, env(webhook_url=ORG_URL))
    assert info.value.variable == 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS'
    assert 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS' in str(info.value)
    assert KEY not in str(info.value)


def test_a_bad_integration_url_is_named_without_its_key():
    bad = f'https://acme.temperstack.com/wrong/{OTHER_KEY}'
    with pytest.raises(EndpointError) as info:
        resolve_integration('db', {}, {'TEMPERSTACK_WEBHOOK_URL_DB': bad})
    assert 'TEMPERSTACK_WEBHOOK_URL_DB' in str(info.value)
    assert OTHER_KEY not in str(info.value)


def test_an_integration_conflicts_with_an_explicit_url_or_key_and_with_both_of_its_variables():
    with pytest.raises(EndpointError, match='integration and webhook_url are mutually exclusive'):
        resolve_integration('db', {'webhook_url': ORG_URL}, {'TEMPERSTACK_WEBHOOK_URL_DB': PAYMENTS_URL})
    with pytest.raises(EndpointError, match='mutually exclusive'):
        resolve_integration('db', {}, {'TEMPERSTACK_WEBHOOK_URL_DB': PAYMENTS_URL, 'TEMPERSTACK_API_KEY_DB': OTHER_KEY})


@pytest.mark.parametrize('value', ['---', '  -  ', 3, ['db']])
def test_a_name_that_cannot_name_a_variable_is_an_error(value):
    with pytest.raises(EndpointError, match='temperstack_integration'):
        integration_name(value)


def test_configured_integrations_come_from_the_environment():
    environ = {
        'TEMPERSTACK_WEBHOOK_URL_PAYMENTS_EU': PAYMENTS_URL,
        'TEMPERSTACK_API_KEY_DB': OTHER_KEY,
        'TEMPERSTACK_WEBHOOK_URL_EMPTY': '',
        'TEMPERSTACK_WEBHOOK_URL': ORG_URL,
        'TEMPERSTACK_API_KEY': KEY,
        'TEMPERSTACK_ORG': 'acme',
    }
    assert configured_integrations(environ) == ['db', 'payments_eu']
    # The lower-cased suffix names the same integration again.
    assert resolve_integration('payments_eu', {}, environ).url == PAYMENTS_URL
