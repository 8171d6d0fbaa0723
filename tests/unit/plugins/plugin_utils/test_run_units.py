# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The playbook_alerts callback's bookkeeping: units per scope, their alert ids, Alarm and OK payloads."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import (
    ALERT_ID_MAX_CHARS,
    FIELDS,
    AlertValidationError,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import MASK
from ansible_collections.temperstack.alerting.plugins.plugin_utils._run_units import (
    MAX_DESCRIPTION_CHARS,
    METRIC_NAME,
    NO_LOG_MESSAGE,
    SCOPES,
    AlertSettings,
    HostFailure,
    RunBook,
    alarm_for,
    failed_hosts_of,
    hosts_of_open_alarm,
    ok_for,
    recovered,
    unit_alert_id,
    validate_settings,
)

ID_SHAPE = re.compile(r'^[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{12}$')
# Anything that looks like a clock or a date: the payload must have none, or every run would re-send it.
TIMESTAMP = re.compile(r'\d{1,2}:\d{2}(:\d{2})?|\d{4}-\d{2}-\d{2}')


def one_play(playbook='/srv/deploy/site.yml', name='Deploy web tier', ran=('web1', 'web2'), failures=()):
    """A RunBook with one finished play: ``ran`` hosts ran, ``failures`` is (host, task, message[, unreachable])."""
    book = RunBook()
    book.start_play(playbook, name)
    for host in ran:
        book.host_ran(host)
    for failure in failures:
        book.host_failed(*failure)
    book.end_play()
    return book


def only_unit(book, scope='play', prefix='ansible'):
    units = book.units(scope, prefix)
    assert len(units) == 1, units
    return units[0]


# -- grouping into units ------------------------------------------------------------------------


def test_play_scope_is_one_unit_per_play_and_playbook():
    book = RunBook()
    book.start_play('site.yml', 'Deploy web tier')
    book.host_ran('web1')
    book.start_play('site.yml', 'Deploy db tier')
    book.host_failed('db1', 'Migrate', 'boom')
    book.start_play('other.yml', 'Deploy web tier')
    book.host_ran('web1')
    book.end_play()

    units = book.units('play', 'ansible')

    assert [(u.kind, u.playbook, u.play, u.host) for u in units] == [
        ('play', 'site.yml', 'Deploy web tier', None),
        ('play', 'site.yml', 'Deploy db tier', None),
        ('play', 'other.yml', 'Deploy web tier', None),
    ]
    assert len({u.alert_id for u in units}) == 3
    assert [bool(u.failed_hosts) for u in units] == [False, True, False]


def test_host_scope_is_one_unit_per_host_across_the_plays_of_a_playbook():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.host_failed('web2', 'Restart nginx', 'nginx: [emerg] bad config')
    book.start_play('site.yml', 'Monitoring')
    book.host_ran('web1')
    book.host_ran('mon1')
    book.end_play()

    units = {u.host: u for u in book.units('host', 'ansible')}

    assert sorted(units) == ['mon1', 'web1', 'web2']
    assert {u.kind for u in units.values()} == {'host'}
    assert [p.name for p in units['web1'].plays] == ['Web', 'Monitoring']
    assert units['web1'].ran_hosts == {'web1'}
    assert units['web1'].failed_hosts == {}
    # Only the unit's own host counts, though the play it shares with web1 had a failure.
    assert list(units['web2'].failed_hosts) == ['web2']
    assert units['web2'].failed_hosts['web2'][0].task == 'Restart nginx'


def test_playbook_scope_is_one_unit_for_all_plays_of_a_playbook():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_failed('web1', 'Deploy', 'first')
    book.start_play('site.yml', 'Db')
    book.host_failed('db1', 'Migrate', 'second')
    book.start_play('other.yml', 'Web')
    book.host_ran('web1')
    book.end_play()

    units = book.units('playbook', 'ansible')

    assert [(u.kind, u.playbook, u.play, u.host) for u in units] == [
        ('playbook', 'site.yml', None, None),
        ('playbook', 'other.yml', None, None),
    ]
    assert sorted(units[0].failed_hosts) == ['db1', 'web1']
    assert units[0].ran_hosts == {'web1', 'db1'}
    assert units[1].failed_hosts == {}


def test_units_of_selected_plays_only():
    book = RunBook()
    first = book.start_play('site.yml', 'One')
    book.host_failed('web1', 't', 'm')
    book.start_play('site.yml', 'Two')
    book.host_ran('web1')
    book.end_play()

    assert [u.play for u in book.units('play', 'ansible', [first])] == ['One']
    assert [u.play for u in book.units('play', 'ansible')] == ['One', 'Two']


def test_playbook_is_named_by_its_file_name_not_its_path():
    book_a = one_play(playbook='/home/alice/ops/site.yml')
    book_b = one_play(playbook='/runner/project/site.yml')

    assert only_unit(book_a).playbook == 'site.yml'
    assert only_unit(book_a).alert_id == only_unit(book_b).alert_id


def test_a_play_of_the_same_name_twice_in_a_playbook_is_one_unit():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_failed('web1', 'a', 'first')
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.end_play()

    unit = only_unit(book)
    assert len(unit.plays) == 2
    assert list(unit.failed_hosts) == ['web1']


def test_unnamed_plays_are_numbered_within_their_playbook():
    book = RunBook()
    book.start_play('a.yml', '')
    book.start_play('a.yml', '  ')
    book.start_play('b.yml', '')
    book.end_play()

    assert [u.play for u in book.units('play', 'ansible')] == ['play #1', 'play #2', 'play #1']


# -- what ran to its end ---------------------------------------------------------------------------


def test_a_play_runs_to_its_end_only_once_ended_and_not_cut_short():
    book = RunBook()
    play = book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    assert not only_unit(book).ran_to_end  # still running: an interrupted run never resolves

    assert book.end_play() is play
    assert only_unit(book).ran_to_end
    assert book.end_play() is None  # ending twice reports nothing new


def test_cut_short_play_did_not_run_to_its_end():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.cut_short()
    book.end_play()

    assert not only_unit(book).ran_to_end


def test_a_cut_play_spoils_every_unit_that_spans_it():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.start_play('site.yml', 'Db')
    book.host_ran('web1')
    book.cut_short()
    book.end_play()

    assert [u.ran_to_end for u in book.units('play', 'ansible')] == [True, False]
    assert not only_unit(book, 'playbook').ran_to_end
    assert not only_unit(book, 'host').ran_to_end


def test_a_host_ended_early_spoils_its_own_host_unit_only():
    # meta end_host on web2: web1 ran the play to its end, web2 did not.
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.host_ran('web2')
    book.ended_early(['web2'])
    book.end_play()

    assert {u.host: u.ran_to_end for u in book.units('host', 'ansible')} == {'web1': True, 'web2': False}
    # A play or playbook unit is about all of its hosts: one of them not at the end spoils it.
    assert not only_unit(book, 'play').ran_to_end
    assert not only_unit(book, 'playbook').ran_to_end


def test_a_host_ended_before_it_ran_anything_still_has_a_unit_that_did_not_run_to_its_end():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.ended_early(['web2'])
    book.end_play()

    units = {u.host: u for u in book.units('host', 'ansible')}
    assert not units['web2'].ran_to_end
    assert units['web2'].ran_hosts == set()
    assert units['web1'].ran_to_end


def test_a_play_that_matched_no_hosts_did_not_run_to_its_end():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_ran('web1')
    book.start_play('site.yml', 'Canary')
    book.no_hosts_matched()
    book.end_play()

    assert {u.play: u.ran_to_end for u in book.units('play', 'ansible')} == {'Web': True, 'Canary': False}
    assert not only_unit(book, 'playbook').ran_to_end
    # It has no host, so it is part of no host's unit.
    assert {u.host: u.ran_to_end for u in book.units('host', 'ansible')} == {'web1': True}


def test_ok_needs_every_host_of_the_alarm_to_have_run_the_unit():
    unit = only_unit(one_play(ran=('web1',)))

    assert recovered(unit, ['web1'])
    assert not recovered(unit, ['web1', 'web2'])  # web2: --limit, an inventory change, an earlier play
    assert recovered(only_unit(one_play(ran=('web1', 'web2'))), ['web1', 'web2'])


def test_ok_needs_no_failure_and_the_end_of_every_play():
    assert not recovered(only_unit(one_play(failures=[('web1', 't', 'm')])), ['web1'])
    book = RunBook()
    book.start_play('site.yml', 'Deploy web tier')
    book.host_ran('web1')
    assert not recovered(only_unit(book), ['web1'])  # not ended: interrupted
    book.ended_early(['web1'])
    book.end_play()
    assert not recovered(only_unit(book), ['web1'])


def test_a_unit_no_host_ran_never_recovers():
    # Even an Alarm that names no host (a record kept before hosts were) is not resolved by a unit
    # nobody ran: a play with no tasks left, or no events.
    unit = only_unit(one_play(ran=()))

    assert unit.ran_to_end
    assert not recovered(unit, [])
    book = RunBook()
    book.start_play('site.yml', 'Deploy web tier')
    book.no_hosts_matched()
    book.end_play()
    assert not recovered(only_unit(book), [])


def test_the_hosts_of_an_open_alarm_accumulate():
    assert hosts_of_open_alarm(['web1', 'web2'], ['web1']) == ['web1', 'web2']
    assert hosts_of_open_alarm(['web2'], ['web3', 'web1']) == ['web1', 'web2', 'web3']
    assert hosts_of_open_alarm((), ['web1']) == ['web1']


def test_starting_a_play_ends_the_previous_one():
    book = RunBook()
    first = book.start_play('site.yml', 'One')
    book.start_play('site.yml', 'Two')

    assert first.completed
    assert not book.current.completed


def test_events_before_any_play_are_ignored():
    book = RunBook()
    book.host_ran('web1')
    book.host_failed('web1', 't', 'm')
    book.cut_short()
    book.ended_early(['web1'])
    book.no_hosts_matched()

    assert book.end_play() is None
    assert book.units('play', 'ansible') == []


def test_failed_host_counts_as_ran_and_failures_accumulate_in_order():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_failed('web1', 'first task', 'one')
    book.host_failed('web1', 'handler', 'two')
    book.end_play()

    unit = only_unit(book)
    assert unit.ran_hosts == {'web1'}
    assert unit.failed_hosts == {'web1': [HostFailure('first task', 'one'), HostFailure('handler', 'two')]}


# -- alert ids -------------------------------------------------------------------------------------


def test_alert_id_is_readable_and_hashed():
    alert_id = unit_alert_id('ansible', 'play', 'site.yml', 'Deploy web tier', None)

    assert ID_SHAPE.match(alert_id)
    assert alert_id.startswith('ansible-site-yml-deploy-web-tier-')


def test_alert_ids_are_stable_across_versions():
    # These exact values are what Temperstack holds for alerts raised by earlier runs: if they change,
    # every open Alarm is orphaned (its OK goes to a new id). Change them only on purpose.
    assert unit_alert_id('ansible', 'play', 'site.yml', 'Deploy web tier', None) == (
        'ansible-site-yml-deploy-web-tier-' + _digest('play', 'site.yml', 'Deploy web tier')
    )
    assert unit_alert_id('ansible', 'host', 'site.yml', None, 'web1') == (
        'ansible-site-yml-web1-' + _digest('host', 'site.yml', 'web1')
    )
    assert unit_alert_id('ansible', 'playbook', 'site.yml', None, None) == (
        'ansible-site-yml-' + _digest('playbook', 'site.yml')
    )


def _digest(scope, *parts):
    """The documented derivation, written out independently of the code under test."""
    import hashlib
    import json

    encoded = json.dumps([f'playbook_alerts/{scope}', *parts], ensure_ascii=False)
    return hashlib.sha256(encoded.encode('utf-8')).hexdigest()[:12]


def test_alert_id_per_scope_names_what_the_scope_has():
    assert only_unit(one_play(), 'play').alert_id.startswith('ansible-site-yml-deploy-web-tier-')
    hosts = {u.host: u.alert_id for u in one_play().units('host', 'ansible')}
    assert hosts['web1'].startswith('ansible-site-yml-web1-')
    assert hosts['web2'].startswith('ansible-site-yml-web2-')
    playbook_id = only_unit(one_play(), 'playbook').alert_id
    assert re.match(r'^ansible-site-yml-[0-9a-f]{12}$', playbook_id)


def test_alert_ids_differ_per_play_host_prefix_playbook_and_scope():
    ids = {
        unit_alert_id('ansible', 'play', 'site.yml', 'Web', None),
        unit_alert_id('ansible', 'play', 'site.yml', 'Db', None),
        unit_alert_id('ansible', 'play', 'other.yml', 'Web', None),
        unit_alert_id('team-b', 'play', 'site.yml', 'Web', None),
        unit_alert_id('ansible', 'host', 'site.yml', None, 'web1'),
        unit_alert_id('ansible', 'host', 'site.yml', None, 'web2'),
        unit_alert_id('ansible', 'playbook', 'site.yml', None, None),
        # the same words in another scope: a play named like a host is not that host
        unit_alert_id('ansible', 'play', 'site.yml', 'web1', None),
    }
    assert len(ids) == 8


def test_alert_ids_that_share_a_slug_still_differ():
    a = unit_alert_id('ansible', 'play', 'site.yml', 'Deploy web tier', None)
    b = unit_alert_id('ansible', 'play', 'site.yml', 'deploy  WEB/tier', None)
    c = unit_alert_id('ansible', 'play', 'site-yml', 'Deploy web tier', None)

    assert a.rsplit('-', 1)[0] == b.rsplit('-', 1)[0] == c.rsplit('-', 1)[0]
    assert len({a, b, c}) == 3


def test_empty_prefix_falls_back_to_ansible():
    assert unit_alert_id('', 'play', 'site.yml', 'Web', None) == unit_alert_id('ansible', 'play', 'site.yml', 'Web', None)


def test_prefix_leads_the_alert_id():
    book = one_play()
    assert only_unit(book, prefix='payments-prod').alert_id.startswith('payments-prod-site-yml-deploy-web-tier-')


@given(
    playbook=st.text(min_size=1, max_size=300),
    play=st.text(max_size=300),
    host=st.text(min_size=1, max_size=300),
    prefix=st.text(max_size=200),
    scope=st.sampled_from(SCOPES),
)
def test_alert_id_is_bounded_well_formed_and_deterministic(playbook, play, host, prefix, scope):
    args = (prefix, scope, playbook, play if scope == 'play' else None, host if scope == 'host' else None)
    alert_id = unit_alert_id(*args)

    assert len(alert_id) <= ALERT_ID_MAX_CHARS
    assert re.match(r'^(?:[a-z0-9]+(?:-[a-z0-9]+)*-)?[0-9a-f]{12}$', alert_id), alert_id
    assert unit_alert_id(*args) == alert_id


def test_long_names_are_cut_to_128_characters_but_stay_distinct():
    long_a = 'Deploy ' + 'x' * 300 + ' A'
    long_b = 'Deploy ' + 'x' * 300 + ' B'
    a = unit_alert_id('ansible', 'play', 'site.yml', long_a, None)
    b = unit_alert_id('ansible', 'play', 'site.yml', long_b, None)

    assert len(a) == len(b) == ALERT_ID_MAX_CHARS
    assert a != b


# -- the Alarm ---------------------------------------------------------------------------------------


def test_alarm_payload_of_a_failed_play():
    book = one_play(failures=[('web2', 'Restart nginx', 'nginx: [emerg] unknown directive "lisen"')])
    settings = AlertSettings(run_book_url='https://wiki.example.com/runbooks/deploy', alert_url='https://awx.example.com/#/jobs/playbook/7/output')

    alarm = alarm_for(only_unit(book), settings)

    assert alarm.payload == {
        'alert_name': "Ansible play 'Deploy web tier' failed (site.yml)",
        'status': 'Alarm',
        'alert_priority': 'Critical',
        'alert_id': only_unit(book).alert_id,
        'description': (
            'Failed hosts (1): web2\n'
            "- web2: task 'Restart nginx' failed: nginx: [emerg] unknown directive \"lisen\""
        ),
        'alert_url': 'https://awx.example.com/#/jobs/playbook/7/output',
        'metric_name': METRIC_NAME,
        'resource_id': 'site.yml:Deploy web tier',
        'resource_name': 'Deploy web tier',
        'resource_type': 'ansible-play',
        'run_book_url': 'https://wiki.example.com/runbooks/deploy',
    }
    assert set(alarm.payload) <= set(FIELDS)


def test_alarm_lists_failed_and_unreachable_hosts_sorted_with_every_failure():
    book = one_play(ran=(), failures=[
        ('web3', 'Deploy', 'disk full'),
        ('web1', 'Deploy', 'permission denied'),
        ('db9', 'Gathering Facts', 'Failed to connect to the host via ssh: Connection refused', True),
        ('web1', 'handler: restart', 'exit 1'),
    ])

    description = alarm_for(only_unit(book), AlertSettings()).payload['description']

    assert description.splitlines() == [
        'Failed hosts (2): web1, web3',
        'Unreachable hosts (1): db9',
        "- db9: task 'Gathering Facts' unreachable: Failed to connect to the host via ssh: Connection refused",
        "- web1: task 'Deploy' failed: permission denied",
        "- web1: task 'handler: restart' failed: exit 1",
        "- web3: task 'Deploy' failed: disk full",
    ]
    assert failed_hosts_of(only_unit(book)) == ['db9', 'web1', 'web3']


def test_alarm_is_the_same_whatever_order_hosts_failed_in():
    failures = [('web1', 'A', 'one'), ('web2', 'A', 'two'), ('web3', 'B', 'three')]
    forward = alarm_for(only_unit(one_play(failures=failures)), AlertSettings())
    backward = alarm_for(only_unit(one_play(failures=list(reversed(failures)))), AlertSettings())

    assert forward.payload == backward.payload
    assert forward.fingerprint == backward.fingerprint


def test_alarm_is_deterministic_and_has_no_timestamps():
    def make():
        return alarm_for(only_unit(one_play(failures=[('web1', 'Deploy', 'boom')])), AlertSettings())

    first, second = make(), make()

    assert first.payload == second.payload
    assert first.fingerprint == second.fingerprint
    for value in first.payload.values():
        assert not TIMESTAMP.search(value), value


def test_a_different_failure_is_a_different_alarm_of_the_same_alert():
    one = alarm_for(only_unit(one_play(failures=[('web1', 'Deploy', 'disk full')])), AlertSettings())
    other = alarm_for(only_unit(one_play(failures=[('web1', 'Deploy', 'out of memory')])), AlertSettings())

    assert one.alert_id == other.alert_id
    assert one.fingerprint != other.fingerprint


def test_error_messages_are_trimmed_to_max_error_chars():
    message = 'x' * 1000
    settings = AlertSettings(max_error_chars=50)

    description = alarm_for(only_unit(one_play(failures=[('web1', 'Deploy', message)])), settings).payload['description']
    quoted = description.splitlines()[-1].split(' failed: ', 1)[1]

    assert len(quoted) == 50
    assert quoted.endswith('...')


def test_short_messages_are_not_trimmed_and_whitespace_is_folded():
    description = alarm_for(
        only_unit(one_play(failures=[('web1', 'Deploy', 'line one\n\n   line two\t')])), AlertSettings(max_error_chars=300)
    ).payload['description']

    assert description.splitlines()[-1] == "- web1: task 'Deploy' failed: line one line two"


def test_zero_max_error_chars_means_no_limit():
    message = 'y' * 5000
    description = alarm_for(
        only_unit(one_play(failures=[('web1', 'Deploy', message)])), AlertSettings(max_error_chars=0)
    ).payload['description']

    assert message in description


def test_url_credentials_in_error_messages_are_masked():
    message = (
        'fetch https://deploy:hunter2@git.example.com/repo.git failed; '
        'posting to https://acme.temperstack.com/api/integration/webhook/tsk-abc123 failed'
    )
    description = alarm_for(only_unit(one_play(failures=[('web1', 'Deploy', message)])), AlertSettings()).payload['description']

    assert 'hunter2' not in description
    assert 'tsk-abc123' not in description
    assert f'https://{MASK}@git.example.com/repo.git' in description
    assert f'/api/integration/webhook/{MASK}' in description


def test_masking_happens_before_trimming():
    # Trimmed first, the cut could fall inside the credentials and leave part of them unmasked.
    message = 'clone https://user:s3cretpassw0rd@git.example.com/x failed'
    description = alarm_for(
        only_unit(one_play(failures=[('web1', 'Deploy', message)])), AlertSettings(max_error_chars=28)
    ).payload['description']

    assert 's3cret' not in description
    assert 'user:' not in description


def test_no_log_placeholder_is_sent_as_is():
    description = alarm_for(
        only_unit(one_play(failures=[('web1', 'Set password', NO_LOG_MESSAGE)])), AlertSettings()
    ).payload['description']

    assert description.splitlines()[-1] == f"- web1: task 'Set password' failed: {NO_LOG_MESSAGE}"


def test_alarm_settings_are_applied():
    settings = AlertSettings(alert_priority='Medium', resource_type='deploy', run_book_url='https://r.example.com/x')
    payload = alarm_for(only_unit(one_play(failures=[('web1', 'a', 'b')])), settings).payload

    assert payload['alert_priority'] == 'Medium'
    assert payload['resource_type'] == 'deploy'
    assert payload['run_book_url'] == 'https://r.example.com/x'
    assert 'alert_url' not in payload


def test_host_scope_alarm():
    book = one_play(failures=[('web2', 'Deploy', 'boom')])
    unit = next(u for u in book.units('host', 'ansible') if u.host == 'web2')

    payload = alarm_for(unit, AlertSettings(scope='host')).payload

    assert payload['alert_name'] == 'Ansible playbook site.yml failed on web2'
    assert (payload['resource_id'], payload['resource_name'], payload['resource_type']) == ('web2', 'web2', 'host')
    assert payload['description'] == "Failed hosts (1): web2\n- web2: task 'Deploy' failed: boom"


def test_playbook_scope_alarm():
    book = RunBook()
    book.start_play('site.yml', 'Web')
    book.host_failed('web1', 'Deploy', 'boom')
    book.start_play('site.yml', 'Db')
    book.host_failed('db1', 'Migrate', 'bang')
    book.end_play()

    payload = alarm_for(only_unit(book, 'playbook'), AlertSettings(scope='playbook')).payload

    assert payload['alert_name'] == 'Ansible playbook site.yml failed'
    assert (payload['resource_id'], payload['resource_name'], payload['resource_type']) == (
        'site.yml', 'site.yml', 'ansible-playbook'
    )
    assert payload['description'].splitlines() == [
        'Failed hosts (2): db1, web1',
        "- db1: task 'Migrate' failed: bang",
        "- web1: task 'Deploy' failed: boom",
    ]


# -- the OK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('scope', SCOPES)
def test_ok_has_the_alarms_id_and_identity(scope):
    book = one_play(failures=[('web1', 'Deploy', 'boom')])
    failed_unit = next(u for u in book.units(scope, 'ansible') if u.failed_hosts)
    green_unit = next(
        u for u in one_play(ran=('web1', 'web2')).units(scope, 'ansible') if u.alert_id == failed_unit.alert_id
    )
    settings = AlertSettings(scope=scope)

    alarm = alarm_for(failed_unit, settings).payload
    ok = ok_for(green_unit, settings).payload

    assert ok['status'] == 'OK'
    assert alarm['status'] == 'Alarm'
    for field in ('alert_id', 'alert_name', 'alert_priority', 'resource_id', 'resource_name', 'resource_type', 'metric_name'):
        assert ok[field] == alarm[field], field
    assert ok['description'].startswith('Recovered')


def test_ok_is_deterministic():
    assert ok_for(only_unit(one_play()), AlertSettings()).payload == ok_for(only_unit(one_play()), AlertSettings()).payload


def test_host_ok_names_the_host():
    unit = next(u for u in one_play().units('host', 'ansible') if u.host == 'web1')

    assert 'on web1' in ok_for(unit, AlertSettings(scope='host')).payload['description']


def test_a_failure_storm_still_makes_one_valid_bounded_alarm():
    failures = [(f'host{i:04d}', 'Install the package', 'x' * 1000) for i in range(600)]
    book = one_play(ran=(), failures=failures)

    description = alarm_for(only_unit(book), AlertSettings()).payload['description']

    assert len(description) <= MAX_DESCRIPTION_CHARS
    assert description.startswith('Failed hosts (600): host0000, host0001')
    shown = description.count("\n- host")
    assert shown > 5
    assert description.endswith(f'... and {600 - shown} more failures not shown')


def test_validate_settings_names_the_bad_setting():
    validate_settings(AlertSettings(run_book_url='https://wiki.example.com/rb'))
    with pytest.raises(AlertValidationError, match='run_book_url must be an http'):
        validate_settings(AlertSettings(run_book_url='wiki'))
    with pytest.raises(AlertValidationError, match='scope must be one of play, host, playbook'):
        validate_settings(AlertSettings(scope='task'))


def test_url_credentials_in_a_task_name_are_masked_too():
    # Found by the fault suite (tests/faults): a task named after a templated URL ("Clone {{ repo_url }}")
    # put the URL's password into the Alarm's description.
    book = RunBook()
    book.start_play('site.yml', 'Deploy')
    book.host_failed('web1', 'Clone https://deploy:S3CRET-PW@git.example.com/app.git', 'exit 128')
    book.end_play()
    [unit] = book.units('play', 'ansible')

    description = alarm_for(unit, AlertSettings()).payload['description']

    assert 'S3CRET-PW' not in description
    assert "task 'Clone https://********@git.example.com/app.git' failed: exit 128" in description
