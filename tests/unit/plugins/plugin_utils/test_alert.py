# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import (
    ALERT_ID_MAX_CHARS,
    FIELDS,
    MAX_FIELD_CHARS,
    Alert,
    AlertValidationError,
    build_alert,
    derive_alert_id,
    payload_fingerprint,
    valid_unicode,
)

OPTIONAL_FIELDS = [field for field in FIELDS if field not in ('alert_name', 'status')]
DERIVED_ID = re.compile(r'^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{12}$')


def minimal(**overrides):
    return {'alert_name': 'Disk almost full', 'status': 'Alarm', **overrides}


# -- required fields ------------------------------------------------------------------------------


def test_minimal_alert_has_name_status_and_derived_id():
    alert = build_alert(minimal())

    assert alert.payload == {
        'alert_name': 'Disk almost full',
        'status': 'Alarm',
        'alert_id': derive_alert_id('Disk almost full'),
    }
    assert alert.status == 'Alarm'
    assert alert.alert_id == alert.payload['alert_id']


@pytest.mark.parametrize('field', ['alert_name', 'status'])
@pytest.mark.parametrize('value', [None, '', '   ', '\t\n'], ids=['none', 'empty', 'spaces', 'whitespace'])
def test_required_field_missing_or_blank(field, value):
    with pytest.raises(AlertValidationError, match=f'^{field} is required and must not be empty$'):
        build_alert(minimal(**{field: value}))


@pytest.mark.parametrize('field', ['alert_name', 'status'])
def test_required_field_absent(field):
    options = minimal()
    del options[field]
    with pytest.raises(AlertValidationError, match=f'{field} is required'):
        build_alert(options)


# -- status and priority --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('given_status', 'canonical'),
    [
        ('Alarm', 'Alarm'), ('alarm', 'Alarm'), ('ALARM', 'Alarm'), ('aLaRm', 'Alarm'), ('  alarm\n', 'Alarm'),
        ('OK', 'OK'), ('ok', 'OK'), ('Ok', 'OK'), ('oK', 'OK'),
    ],
)
def test_status_any_case_is_canonical(given_status, canonical):
    assert build_alert(minimal(status=given_status)).payload['status'] == canonical


@pytest.mark.parametrize(
    ('given_priority', 'canonical'),
    [('Critical', 'Critical'), ('critical', 'Critical'), ('CRITICAL', 'Critical'), ('medium', 'Medium'), ('MeDiUm', 'Medium')],
)
def test_priority_any_case_is_canonical(given_priority, canonical):
    assert build_alert(minimal(alert_priority=given_priority)).payload['alert_priority'] == canonical


@pytest.mark.parametrize('value', ['Firing', 'resolved', 'alarmed', 'O K', '1'])
def test_bad_status_names_option_and_allowed_values(value):
    with pytest.raises(AlertValidationError) as info:
        build_alert(minimal(status=value))
    message = str(info.value)
    assert message.startswith('status must be one of')
    assert 'Alarm' in message and 'OK' in message
    assert repr(value) in message


@pytest.mark.parametrize('value', ['High', 'low', 'P1', 'Critical!'])
def test_bad_priority_names_option_and_allowed_values(value):
    with pytest.raises(AlertValidationError) as info:
        build_alert(minimal(alert_priority=value))
    message = str(info.value)
    assert message.startswith('alert_priority must be one of')
    assert 'Critical' in message and 'Medium' in message
    assert repr(value) in message


def test_priority_left_out_when_unset():
    assert 'alert_priority' not in build_alert(minimal(alert_priority=None)).payload
    assert 'alert_priority' not in build_alert(minimal(alert_priority='')).payload


# -- URL fields -----------------------------------------------------------------------------------


@pytest.mark.parametrize('field', ['alert_url', 'run_book_url'])
@pytest.mark.parametrize(
    'url',
    ['https://grafana.example.com/d/abc?orgId=1', 'http://wiki.example.com/runbooks/disk', 'HTTPS://EXAMPLE.COM'],
)
def test_http_urls_accepted(field, url):
    assert build_alert(minimal(**{field: url})).payload[field] == url


@pytest.mark.parametrize('field', ['alert_url', 'run_book_url'])
@pytest.mark.parametrize(
    'url',
    [
        'ftp://files.example.com/runbook.pdf',
        'javascript:alert(1)',
        'file:///etc/passwd',
        'wiki.example.com/runbooks/disk',
        '/runbooks/disk',
        'http://',
        'https:///path-only',
        'http://[::1',  # urlsplit raises ValueError
    ],
)
def test_non_http_urls_rejected_naming_the_option(field, url):
    with pytest.raises(AlertValidationError) as info:
        build_alert(minimal(**{field: url}))
    message = str(info.value)
    assert message.startswith(f'{field} must be an http:// or https:// URL')
    assert repr(url) in message


def test_other_fields_are_not_checked_as_urls():
    assert build_alert(minimal(description='see ftp://x')).payload['description'] == 'see ftp://x'


# -- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('value', 'text'),
    [(42, '42'), (0, '0'), (-7, '-7'), (3.5, '3.5'), (10 ** 20, '100000000000000000000')],
)
def test_numbers_become_strings(value, text):
    for field in ('alert_id', 'resource_id', 'description', 'metric_name'):
        assert build_alert(minimal(**{field: value})).payload[field] == text, field


def test_number_as_alert_name_is_text():
    payload = build_alert(minimal(alert_name=500)).payload
    assert payload['alert_name'] == '500'
    assert all(isinstance(value, str) for value in payload.values())


@pytest.mark.parametrize(
    ('value', 'described'),
    [
        (True, 'a boolean'),
        (False, 'a boolean'),
        (['a', 'b'], 'a list'),
        (('a',), 'a list'),
        ({'a'}, 'a list'),
        ([], 'a list'),
        ({'key': 'value'}, 'a dictionary'),
        ({}, 'a dictionary'),
        (b'bytes', 'a value of type bytes'),
        (object(), 'a value of type object'),
    ],
    ids=['true', 'false', 'list', 'tuple', 'set', 'empty-list', 'dict', 'empty-dict', 'bytes', 'object'],
)
def test_non_scalar_values_rejected_naming_the_option(value, described):
    for field in FIELDS:
        with pytest.raises(AlertValidationError) as info:
            build_alert(minimal(**{field: value}))
        assert str(info.value) == f'{field} must be a string, got {described}'


def test_overlong_value_rejected_naming_the_option():
    for field in FIELDS:
        with pytest.raises(AlertValidationError) as info:
            build_alert(minimal(**{field: 'x' * (MAX_FIELD_CHARS + 1)}))
        message = str(info.value)
        assert message.startswith(f'{field} is {MAX_FIELD_CHARS + 1} characters long')
        assert str(MAX_FIELD_CHARS) in message


def test_value_of_maximum_length_accepted():
    assert len(build_alert(minimal(description='x' * MAX_FIELD_CHARS)).payload['description']) == MAX_FIELD_CHARS


# -- which fields are kept ------------------------------------------------------------------------


def test_only_the_eleven_fields_are_kept_in_order():
    options = {
        'alert_name': 'Disk almost full',
        'status': 'alarm',
        'alert_priority': 'medium',
        'alert_id': 'disk-web01',
        'description': '/var is 93% full',
        'alert_url': 'https://grafana.example.com/d/disk',
        'metric_name': 'disk_used_percent',
        'resource_id': 'web01',
        'resource_name': 'Web server 1',
        'resource_type': 'host',
        'run_book_url': 'https://wiki.example.com/runbooks/disk',
        # connection and behaviour options, and anything else, never reach the payload
        'webhook_url': 'https://acme.temperstack.com/api/integration/webhook/secret',
        'api_key': 'secret',
        'org': 'acme',
        'base_url': 'https://temperstack.example.com',
        'timeout': 10,
        'retries': 3,
        'validate_certs': True,
        'ca_path': '/etc/ssl/ca.pem',
        'ledger_path': '/tmp/ledger.sqlite3',
        'force': True,
        'unexpected': 'ignored',
    }
    payload = build_alert(options).payload

    assert list(payload) == list(FIELDS)
    assert len(FIELDS) == 11
    assert payload['status'] == 'Alarm'
    assert payload['alert_priority'] == 'Medium'
    assert payload['alert_id'] == 'disk-web01'
    assert 'secret' not in repr(payload)


@pytest.mark.parametrize('value', [None, '', '  \n\t '], ids=['none', 'empty', 'whitespace'])
def test_unset_optional_fields_left_out(value):
    for field in OPTIONAL_FIELDS:
        payload = build_alert(minimal(**{field: value})).payload
        if field == 'alert_id':
            assert payload['alert_id'] == derive_alert_id('Disk almost full')
        else:
            assert field not in payload, field
    assert list(build_alert(minimal(**{field: value for field in OPTIONAL_FIELDS})).payload) == [
        'alert_name', 'status', 'alert_id'
    ]


def test_values_are_stripped():
    payload = build_alert(minimal(alert_name='  Disk almost full \n', resource_id=' web01 ', alert_id=' my-id ')).payload
    assert payload['alert_name'] == 'Disk almost full'
    assert payload['resource_id'] == 'web01'
    assert payload['alert_id'] == 'my-id'


def test_explicit_alert_id_is_kept_as_given():
    assert build_alert(minimal(alert_id='Deploy web tier #42')).alert_id == 'Deploy web tier #42'


# -- derived alert_id ---------------------------------------------------------------------------


def test_derived_alert_id_is_readable():
    alert_id = build_alert(minimal(alert_name='Disk almost full', resource_id='web01.example.com')).alert_id
    assert alert_id.startswith('ansible-disk-almost-full-web01-example-com-')
    assert DERIVED_ID.match(alert_id)


def test_derived_alert_id_is_stable_across_releases():
    # Changing the derivation would orphan every alert already raised with a derived id:
    # its OK would never resolve the Alarm Temperstack holds. Change this only on purpose.
    assert derive_alert_id('Disk almost full', 'web01') == 'ansible-disk-almost-full-web01-b9a91f0f86e6'
    assert derive_alert_id('Disk almost full') == 'ansible-disk-almost-full-912ffd346da3'
    assert derive_alert_id('Disk almost full', None) == derive_alert_id('Disk almost full')


def test_derived_alert_id_is_stable_between_calls():
    assert build_alert(minimal(resource_id='web01')).alert_id == build_alert(minimal(resource_id='web01')).alert_id


def test_derived_alert_id_depends_only_on_alert_name_and_resource_id():
    first = build_alert(minimal(status='alarm', resource_id='web01', description='one'))
    second = build_alert(minimal(status='OK', resource_id='web01', description='two', alert_priority='Medium'))
    assert first.alert_id == second.alert_id


@pytest.mark.parametrize(
    ('first', 'second'),
    [
        (('Disk almost full', 'web01'), ('Disk almost full', 'web02')),
        (('Disk almost full', 'web01'), ('Disk almost full', None)),
        (('Disk almost full', ''), ('Disk almost full', None)),
        (('a b', None), ('a-b', None)),  # same slug
        (('a b', None), ('A B', None)),  # same slug, letter case differs
        (('a', 'b c'), ('a b', 'c')),  # same slug, split differently
        (('a\x1fb', None), ('a', 'b')),  # the separator itself in a value
        (('ÄÄ', None), ('ÖÖ', None)),  # empty slugs
        (('x' * 500 + 'a', None), ('x' * 500 + 'b', None)),  # slugs cut to the same prefix
    ],
)
def test_derived_alert_id_distinct_for_distinct_inputs(first, second):
    assert derive_alert_id(*first) != derive_alert_id(*second)


def test_derived_alert_id_salt_and_prefix_keep_id_spaces_apart():
    module_id = derive_alert_id('Deploy', 'web01')
    assert derive_alert_id('Deploy', 'web01', salt='playbook_alerts/play') != module_id
    assert derive_alert_id('Deploy', 'web01', prefix='ops').startswith('ops-deploy-web01-')


def test_derived_alert_id_length_is_bounded():
    alert_id = derive_alert_id('word ' * 1000, 'resource ' * 1000)
    assert len(alert_id) <= ALERT_ID_MAX_CHARS
    assert DERIVED_ID.match(alert_id)
    assert not alert_id.startswith('-') and '--' not in alert_id


def test_derived_alert_id_of_non_ascii_name():
    alert_id = derive_alert_id('Dîsk ✓ almost fûll 💥')
    assert alert_id.startswith('ansible-d-sk-almost-f-ll-')
    assert DERIVED_ID.match(alert_id)
    assert DERIVED_ID.match(derive_alert_id('💥💥💥'))


# -- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_independent_of_key_order(make_alert):
    alert = make_alert()
    reversed_payload = dict(reversed(list(alert.payload.items())))
    assert list(reversed_payload) != list(alert.payload)
    assert payload_fingerprint(reversed_payload) == alert.fingerprint
    assert Alert(reversed_payload).fingerprint == alert.fingerprint


def test_fingerprint_changes_with_any_value(make_alert):
    alert = make_alert()
    for field in alert.payload:
        changed = dict(alert.payload, **{field: alert.payload[field] + '!'})
        assert payload_fingerprint(changed) != alert.fingerprint, field
    assert make_alert(status='OK').fingerprint != alert.fingerprint
    assert payload_fingerprint({k: v for k, v in alert.payload.items() if k != 'description'}) != alert.fingerprint


def test_fingerprint_is_a_sha256_hex_digest(make_alert):
    assert re.fullmatch(r'[0-9a-f]{64}', make_alert().fingerprint)


def test_repr_shows_the_payload(make_alert):
    alert = make_alert()
    assert repr(alert) == f'Alert({alert.payload!r})'


# -- properties -----------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.text(),
    st.sampled_from(['Alarm', 'ok', 'OK ', 'critical', 'MEDIUM', 'https://example.com/x', 'http://[::1']),
    st.integers(),
    st.floats(),
    st.booleans(),
)
ANY_VALUE = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def _check_valid(alert: Alert) -> None:
    payload = alert.payload
    assert set(payload) <= set(FIELDS)
    assert {'alert_name', 'status', 'alert_id'} <= set(payload)
    assert all(isinstance(value, str) and value and value == value.strip() for value in payload.values())
    assert payload['status'] in ('Alarm', 'OK')
    assert payload.get('alert_priority', 'Critical') in ('Critical', 'Medium')
    assert alert.fingerprint == payload_fingerprint(dict(payload))


@given(alert_name=st.text(), status=st.sampled_from(['Alarm', 'alarm', 'OK', 'ok']))
def test_any_text_alert_name_gives_valid_alert_or_validation_error(alert_name, status):
    try:
        alert = build_alert({'alert_name': alert_name, 'status': status})
    except AlertValidationError as exc:
        assert 'alert_name' in str(exc)
        return
    _check_valid(alert)
    assert alert.payload['alert_name'] == alert_name.strip()
    assert len(alert.alert_id) <= ALERT_ID_MAX_CHARS
    assert DERIVED_ID.match(alert.alert_id)


@given(options=st.fixed_dictionaries({}, optional={field: ANY_VALUE for field in FIELDS}))
def test_any_options_give_valid_alert_or_validation_error(options):
    try:
        alert = build_alert(options)
    except AlertValidationError as exc:
        # The message always names the option at fault.
        assert any(field in str(exc) for field in FIELDS)
        return
    _check_valid(alert)


@given(st.text(), st.one_of(st.none(), st.text()))
def test_derived_alert_id_is_bounded_readable_and_deterministic(alert_name, resource_id):
    alert_id = derive_alert_id(alert_name, resource_id)
    assert len(alert_id) <= ALERT_ID_MAX_CHARS
    assert DERIVED_ID.match(alert_id)
    assert alert_id == derive_alert_id(alert_name, resource_id)


@given(st.text(), st.one_of(st.none(), st.text()), st.text(), st.one_of(st.none(), st.text()))
def test_derived_alert_id_distinct_for_distinct_inputs_property(name_a, resource_a, name_b, resource_b):
    assume((name_a, resource_a) != (name_b, resource_b))
    assert derive_alert_id(name_a, resource_a) != derive_alert_id(name_b, resource_b)


@given(st.dictionaries(st.sampled_from(FIELDS), st.text(), min_size=1).flatmap(
    lambda payload: st.tuples(st.just(payload), st.permutations(list(payload)))
))
def test_fingerprint_independent_of_key_order_property(payload_and_order):
    payload, order = payload_and_order
    assert payload_fingerprint({key: payload[key] for key in order}) == payload_fingerprint(payload)


@pytest.mark.parametrize(('given', 'sent'), [
    ('disk \udcff full', 'disk \ufffd full'),        # an undecodable byte, as Ansible decodes it
    ('\ud800', '\ufffd'),                            # nothing but a lone surrogate: still not empty
    ('\ud83d\ude00 up', '\U0001f600 up'),            # a surrogate pair stands for one character
    ('plain', 'plain'),
])
def test_lone_surrogates_become_replacement_characters(given, sent):
    # Found by the fault suite (tests/faults): a lone surrogate in any field made a body that is not UTF-8
    # (Temperstack answers 400, the callback drops the alert) and a ledger entry SQLite refused (a traceback).
    alert = build_alert({'alert_name': 'n', 'status': 'Alarm', 'description': given})

    description = alert.payload['description']
    description.encode('utf-8')
    assert description == sent
    assert valid_unicode(given) == description


@given(st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())))
def test_every_text_is_sent_as_valid_utf8(text):
    assume(text.strip())
    alert = build_alert({'alert_name': text, 'status': 'OK', 'alert_id': text.replace('\0', '')})

    for value in alert.payload.values():
        value.encode('utf-8')


def test_an_alert_id_with_a_nul_character_is_refused_naming_it():
    """The ledger keys on alert_id, and PostgreSQL cannot store a NUL in text: refused on either backend alike."""
    with pytest.raises(AlertValidationError, match=r'^alert_id must not contain a NUL character'):
        build_alert({'alert_name': 'Disk full', 'status': 'Alarm', 'alert_id': 'disk\0full'})
