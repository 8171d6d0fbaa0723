# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Maintenance windows (issue 12): the silence module's options, and which silence covers which alert."""

from __future__ import annotations

import datetime
import time
import typing as t

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Silence
from ansible_collections.temperstack.alerting.plugins.plugin_utils._silences import (
    MAX_SILENCE_SECONDS,
    build_silence,
    describe_silence,
    is_active,
    iso,
    matches,
    parse_duration,
    parse_time,
    silencing,
)

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()
HOUR = 3600.0
DAY = 86400.0


def utc(*fields: int) -> float:
    return datetime.datetime(*fields, tzinfo=datetime.timezone.utc).timestamp()


def window(name: str = 'maint', starts: float = NOW - HOUR, ends: float = NOW + HOUR, **matchers) -> Silence:
    return Silence(name, starts=starts, ends=ends, **matchers)


# -- parse_duration -------------------------------------------------------------------------------


DURATIONS = [
    ('2h', 2 * HOUR),
    ('1h30m', 90 * 60),
    ('45m', 45 * 60),
    ('90s', 90),
    ('1d', DAY),
    ('1w', 7 * DAY),
    ('1w2d3h4m5s', 7 * DAY + 2 * DAY + 3 * HOUR + 4 * 60 + 5),
    (' 2h ', 2 * HOUR),
    ('PT2H', 2 * HOUR),
    ('PT1H30M', 90 * 60),
    ('P1D', DAY),
    ('P1DT12H', 1.5 * DAY),
    ('P2W', 14 * DAY),
    ('pt45m', 45 * 60),
    ('PT90S', 90),
    (3600, HOUR),
    (90.0, 90),
    ('366d', MAX_SILENCE_SECONDS),
    (MAX_SILENCE_SECONDS, MAX_SILENCE_SECONDS),
]
NOT_DURATIONS = [
    '', '   ', '0', '0h', '0s', 'PT0S', 'P', 'PT', 'abc', '2x', '2', '1h30', 'h', '2 h', '1.5h', '-1h', '2H',
    'P1H', 'PT1D', -1, 0, 1.5, True, False, None, ['2h'], {'hours': 2},
]


def refusal(function: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> str:
    """The message of the AlertValidationError that ``function`` raises."""
    with pytest.raises(AlertValidationError) as caught:
        function(*args, **kwargs)
    return str(caught.value)


def test_parse_duration_takes_what_operators_type_and_iso_8601():
    parsed = {value if isinstance(value, str) else repr(value): parse_duration(value) for value, _seconds in DURATIONS}
    assert parsed == {value if isinstance(value, str) else repr(value): float(seconds) for value, seconds in DURATIONS}
    assert all(isinstance(seconds, float) for seconds in parsed.values())


def test_parse_duration_rejects_what_is_not_a_positive_duration_naming_the_option():
    for value in NOT_DURATIONS:
        assert refusal(parse_duration, value) == (
            f'duration must be a duration such as 2h, 1h30m, 45m, 90s, 1d or PT2H, longer than 0; got {value!r}'
        )


def test_parse_duration_names_the_option_it_was_given_for():
    with pytest.raises(AlertValidationError, match=r'^health_checks_window must be a duration such as 2h.*got \'2x\'$'):
        parse_duration('2x', 'health_checks_window')


def test_parse_duration_rejects_more_than_366_days():
    for value in ('367d', '53w', 'P367D', MAX_SILENCE_SECONDS + 1, '366d1s'):
        assert refusal(parse_duration, value) == f'duration must be at most 366 days; got {value!r}'


# -- parse_time -----------------------------------------------------------------------------------


TIMES = [
    ('2026-12-01T22:00:00+01:00', utc(2026, 12, 1, 21, 0)),
    ('2026-12-01T22:00:00-05:30', utc(2026, 12, 2, 3, 30)),
    ('2026-12-01T21:00:00Z', utc(2026, 12, 1, 21, 0)),
    ('2026-12-01T21:00:00z', utc(2026, 12, 1, 21, 0)),
    ('2026-12-01T21:00:00.250+00:00', utc(2026, 12, 1, 21, 0) + 0.25),
    (' 2026-12-01T21:00Z ', utc(2026, 12, 1, 21, 0)),
]


def test_parse_time_takes_iso_8601_with_an_offset():
    assert [parse_time(value, 'starts') for value, _expected in TIMES] == [expected for _value, expected in TIMES]


@pytest.fixture
def controller_five_hours_behind_utc(monkeypatch):
    """A local time zone that is not UTC, so that a naive time read as UTC would be five hours off."""
    monkeypatch.setenv('TZ', 'TST+05')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_parse_time_reads_a_time_without_an_offset_as_the_controllers_local_time(controller_five_hours_behind_utc):
    assert parse_time('2026-12-01 22:00', 'starts') == utc(2026, 12, 2, 3, 0)
    assert parse_time('2026-12-01T22:00:00', 'ends') == utc(2026, 12, 2, 3, 0)


@pytest.mark.parametrize('option', ['starts', 'ends'])
def test_parse_time_rejects_junk_naming_the_option(option):
    for value in ('', 'tomorrow', 'now', '2026-13-01T00:00', '2026-12-01T25:00', '22:00', '1764626400', 1764626400, 1764626400.0,
                  True, None):
        assert refusal(parse_time, value, option) == (
            f'{option} must be a date and time in ISO 8601, such as 2026-12-01T22:00:00+01:00 or 2026-12-01 22:00; got {value!r}'
        )


def test_iso_is_utc_to_the_second():
    assert iso(utc(2026, 12, 1, 21, 0) + 0.75) == '2026-12-01T21:00:00+00:00'


# -- build_silence --------------------------------------------------------------------------------


def test_build_silence_from_the_modules_options():
    silence = build_silence({
        'name': ' db-maintenance ',
        'alert_id': ['disk-*', 'cpu-*', 'disk-*'],
        'resource_id': 'db-*',
        'hosts': ['db2', 'db1'],
        'starts': '2030-06-01T14:00:00+02:00',
        'ends': '2030-06-01T16:30:00+02:00',
        'comment': ' PostgreSQL upgrade ',
    }, now=NOW - HOUR)

    assert silence == Silence(
        'db-maintenance', ('cpu-*', 'disk-*'), ('db-*',), ('db1', 'db2'), NOW, NOW + 2.5 * HOUR, 'PostgreSQL upgrade', 0.0,
    )


def test_build_silence_starts_now_and_lasts_its_duration():
    silence = build_silence({'name': 'm', 'hosts': ['web1'], 'duration': '1h30m'}, now=NOW)
    assert (silence.starts, silence.ends, silence.comment) == (NOW, NOW + 1.5 * HOUR, '')


def test_build_silence_duration_counts_from_starts():
    silence = build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-06-02T00:00:00Z', 'duration': 'PT2H'}, now=NOW)
    assert (silence.starts, silence.ends) == (utc(2030, 6, 2, 0, 0), utc(2030, 6, 2, 2, 0))


def test_build_silence_defaults_to_the_clock():
    before = time.time()
    silence = build_silence({'name': 'm', 'hosts': ['web1'], 'duration': '1h'})
    assert before <= silence.starts <= time.time()
    assert silence.ends == silence.starts + HOUR


def test_build_silence_needs_a_matcher():
    for matchers in ({}, {'alert_id': None, 'resource_id': None, 'hosts': None}, {'alert_id': [], 'hosts': []}):
        message = refusal(build_silence, {'name': 'm', 'duration': '1h', **matchers}, now=NOW)
        assert message.startswith('a silence needs at least one of alert_id, resource_id or hosts'), matchers


def test_build_silence_rejects_an_end_before_its_start():
    with pytest.raises(AlertValidationError) as caught:
        build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-06-02T10:00:00Z', 'ends': '2030-06-02T09:00:00Z'}, now=NOW)
    assert str(caught.value) == 'ends (2030-06-02T09:00:00+00:00) must be after starts (2030-06-02T10:00:00+00:00)'


def test_build_silence_rejects_an_end_equal_to_its_start():
    with pytest.raises(AlertValidationError, match=r'^ends \(.*\) must be after starts'):
        build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-06-02T10:00:00Z', 'ends': '2030-06-02T10:00:00Z'}, now=NOW)


def test_build_silence_rejects_an_end_in_the_past():
    with pytest.raises(AlertValidationError) as caught:
        build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-05-01T00:00:00Z', 'ends': '2030-05-02T00:00:00Z'}, now=NOW)
    assert str(caught.value) == 'ends (2030-05-02T00:00:00+00:00) is in the past: such a silence would withhold nothing'


def test_build_silence_takes_a_window_that_began_in_the_past_and_still_runs():
    silence = build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-05-01T00:00:00Z', 'duration': '5w'}, now=NOW)
    assert silence.starts < NOW < silence.ends


def test_build_silence_rejects_ends_and_duration_together():
    with pytest.raises(AlertValidationError) as caught:
        build_silence({'name': 'm', 'hosts': ['web1'], 'ends': '2030-06-02T00:00:00Z', 'duration': '1h'}, now=NOW)
    assert str(caught.value) == 'ends and duration are mutually exclusive: give one of them'


def test_build_silence_needs_an_end():
    with pytest.raises(AlertValidationError) as caught:
        build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-06-02T00:00:00Z'}, now=NOW)
    assert str(caught.value) == 'a silence needs an end: give ends (ISO 8601) or duration (such as 2h)'


def test_build_silence_rejects_a_window_longer_than_366_days():
    with pytest.raises(AlertValidationError) as caught:
        build_silence({'name': 'm', 'hosts': ['web1'], 'starts': '2030-06-01T12:00:00Z', 'ends': '2031-06-03T12:00:00Z'}, now=NOW)
    assert str(caught.value) == 'a silence may last at most 366 days (from starts to ends)'


def test_build_silence_names_the_option_of_a_bad_window():
    for args, message in (
        ({'starts': 'tonight', 'duration': '1h'}, 'starts must be a date and time in ISO 8601'),
        ({'ends': 'tomorrow'}, 'ends must be a date and time in ISO 8601'),
        ({'duration': '2x'}, 'duration must be a duration such as 2h'),
        ({'duration': '400d'}, 'duration must be at most 366 days'),
    ):
        assert refusal(build_silence, {'name': 'm', 'hosts': ['web1'], **args}, now=NOW).startswith(message)


def test_build_silence_names_an_option_that_is_not_text():
    for option, value, shown in (
        ('name', None, 'None'), ('name', '', "''"), ('name', '   ', "'   '"), ('name', 5, '5'), ('name', ['m'], "['m']"),
        ('comment', 5, '5'), ('comment', ['why'], "['why']"), ('comment', {'why': 'because'}, "{'why': 'because'}"),
        ('alert_id', [5], '5'), ('hosts', ['web1', ''], "''"), ('resource_id', [None], 'None'),
    ):
        message = refusal(build_silence, {'name': 'm', 'hosts': ['web1'], 'duration': '1h', option: value}, now=NOW)
        assert message == f'{option} must be a non-empty string; got {shown}'


def test_build_silence_names_a_matcher_that_is_not_a_list():
    for option in ('alert_id', 'resource_id', 'hosts'):
        for value in (5, {'db-*': True}, True):
            message = refusal(build_silence, {'name': 'm', 'duration': '1h', option: value}, now=NOW)
            assert message == f'{option} must be a list of glob patterns, such as ["db-*"]; got {value!r}'


def test_describe_silence_is_what_the_modules_return():
    silence = window('db', starts=utc(2030, 6, 1, 11, 0), ends=utc(2030, 6, 1, 13, 0), resource_ids=('db-*',), comment='upgrade')
    assert describe_silence(silence, now=NOW) == {
        'name': 'db',
        'alert_id': [],
        'resource_id': ['db-*'],
        'hosts': [],
        'starts': '2030-06-01T11:00:00+00:00',
        'ends': '2030-06-01T13:00:00+00:00',
        'comment': 'upgrade',
        'active': True,
    }
    assert describe_silence(silence, now=NOW + 2 * HOUR)['active'] is False


# -- which silence covers which alert -------------------------------------------------------------


def test_every_kind_of_matcher_a_silence_has_must_match():
    silence = window(alert_ids=('disk-*',), resource_ids=('db-*',), hosts=('db?',))
    assert matches(silence, 'disk-var', 'db-01', ['db1']) is True
    assert matches(silence, 'cpu-load', 'db-01', ['db1']) is False
    assert matches(silence, 'disk-var', 'web-01', ['db1']) is False
    assert matches(silence, 'disk-var', 'db-01', ['web1']) is False
    assert matches(silence, 'disk-var', None, ['db1']) is False
    assert matches(silence, 'disk-var', 'db-01', []) is False


def test_any_pattern_of_one_kind_matches():
    silence = window(alert_ids=('disk-*', 'cpu-load'))
    assert matches(silence, 'disk-var', None, ()) is True
    assert matches(silence, 'cpu-load', None, ()) is True
    assert matches(silence, 'cpu-load-2', None, ()) is False


def test_a_host_pattern_matches_any_of_the_alerts_hosts():
    silence = window(hosts=('db*', 'cache1'))
    assert matches(silence, 'a', None, ['web1', 'db2']) is True
    assert matches(silence, 'a', None, ('web1', 'cache1')) is True
    assert matches(silence, 'a', None, ['web1', 'cache10']) is False
    assert matches(silence, 'a', None, []) is False


def test_a_kind_the_silence_does_not_have_matches_anything():
    assert matches(window(resource_ids=('db-*',)), 'whatever', 'db-7', []) is True
    assert matches(window(hosts=('web1',)), 'whatever', None, ['web1']) is True


def test_an_alert_without_a_resource_id_is_not_covered_by_resource_patterns():
    assert matches(window(resource_ids=('*',)), 'a', None, ['web1']) is False
    assert matches(window(resource_ids=('*',)), 'a', '', ['web1']) is True


GLOBS = [
    ('Web*', 'web1', False),
    ('web*', 'Web1', False),
    ('web*', 'web1', True),
    ('web?', 'web12', False),
    ('web[0-9]', 'web7', True),
    ('web[!0-9]', 'web7', False),
    ('web1', 'web1.example.com', False),
    ('*', 'anything', True),
]


def test_globs_are_case_sensitive_fnmatch():
    for pattern, value, expected in GLOBS:
        assert matches(window(alert_ids=(pattern,)), value, None, ()) is expected, (pattern, value)
        assert matches(window(resource_ids=(pattern,)), 'a', value, ()) is expected, (pattern, value)
        assert matches(window(hosts=(pattern,)), 'a', None, [value]) is expected, (pattern, value)


def test_a_silence_is_active_from_its_start_until_its_end():
    silence = window(starts=NOW, ends=NOW + HOUR)
    assert [is_active(silence, at) for at in (NOW - 1, NOW, NOW + HOUR - 1, NOW + HOUR)] == [False, True, True, False]


def test_only_an_active_silence_silences():
    later = window('later', starts=NOW + 60, ends=NOW + HOUR, hosts=('web1',))
    ended = window('ended', starts=NOW - HOUR, ends=NOW - 60, hosts=('web1',))
    assert silencing([later, ended], 'a', None, ['web1'], now=NOW) is None
    assert silencing([later, ended], 'a', None, ['web1'], now=NOW + 61) == later
    assert silencing([later, ended], 'a', None, ['web1'], now=NOW - 61) == ended


def test_silencing_takes_the_first_covering_silence_by_name():
    silences = [
        window('c-hosts', hosts=('web*',)),
        window('b-other', hosts=('db*',)),
        window('a-ended', ends=NOW - 1, hosts=('web*',)),
        window('B-upper', alert_ids=('disk-*',)),
        window('b-ids', alert_ids=('disk-*',)),
    ]
    assert silencing(silences, 'disk-var', None, ['web1'], now=NOW).name == 'B-upper'
    assert silencing(silences, 'cpu', None, iter(['web1']), now=NOW).name == 'c-hosts'
    assert silencing(silences[:2], 'cpu', None, ['db1'], now=NOW).name == 'b-other'
    assert silencing(silences, 'cpu', None, ['cache1'], now=NOW) is None
    assert silencing([], 'cpu', None, ['web1'], now=NOW) is None


def test_silencing_defaults_to_the_clock():
    running = Silence('now', hosts=('web1',), starts=time.time() - 60, ends=time.time() + 60)
    assert silencing([running], 'a', None, ['web1']) == running
