# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ledger's methods for silences, withheld Alarms, damping streaks and what is open, run against every backend.

Like test_ledger_contract.py, each test takes ``ledger_backend`` (conftest.py), so it runs on SQLite and on
PostgreSQL, and uses only ``open_ledger`` and the public methods of ``Ledger``.
"""

from __future__ import annotations

import time

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    Ledger,
    LedgerError,
    Record,
    Silence,
    Withheld,
)

from ansible_collections.temperstack.alerting.tests.unit.plugins.plugin_utils.conftest import LedgerBackend

OTHER_ENDPOINT = 'e' * 64
HOUR = 3600.0


@pytest.fixture
def ledger(ledger_backend: LedgerBackend) -> Ledger:
    return ledger_backend.open()


def running(name: str, **fields) -> Silence:
    now = time.time()
    return Silence(name, **{'hosts': ('web1',), 'starts': now - 60, 'ends': now + HOUR, **fields})


def ended(name: str) -> Silence:
    now = time.time()
    return Silence(name, hosts=('web1',), starts=now - HOUR, ends=now - 60)


def names(ledger: Ledger) -> list[str]:
    return sorted(silence.name for silence in ledger.silences())


def withheld_ids(ledger: Ledger, endpoint: str | None) -> list[tuple[str, str]]:
    return sorted((item.silence, item.record.alert_id) for item in ledger.withheld(endpoint))


# -- silences -------------------------------------------------------------------------------------------


def test_put_silence_reports_a_change_only_when_something_differs(ledger):
    silence = running('maint', alert_ids=('disk-*',), resource_ids=('db-*',), comment='upgrade')
    assert ledger.put_silence(silence) is True
    [stored] = ledger.silences()
    assert stored == silence._replace(created=stored.created)
    assert stored.created > 0

    assert ledger.put_silence(silence) is False
    assert ledger.put_silence(silence._replace(created=stored.created + 500)) is False  # when it was made is no difference
    assert ledger.silences() == [stored]

    changes = {
        'alert_ids': ('disk-*', 'cpu-*'),
        'resource_ids': (),
        'hosts': ('web1', 'web2'),
        'starts': silence.starts - 1,
        'ends': silence.ends + 1,
        'comment': 'upgrade, longer',
    }
    for field, value in changes.items():
        changed = silence._replace(**{field: value})
        assert ledger.put_silence(changed) is True, field
        [stored] = ledger.silences()
        assert stored == changed._replace(created=stored.created), field
        assert ledger.put_silence(changed) is False, field
        silence = changed


def test_remove_silence_removes_only_the_named_one(ledger):
    for name in ('maint-a', 'maint-b'):
        ledger.put_silence(running(name))
    assert ledger.remove_silence('maint-a') is True
    assert names(ledger) == ['maint-b']
    assert ledger.remove_silence('maint-a') is False
    assert ledger.remove_silence('maint-*') is False  # a plain name, not a pattern
    assert ledger.remove_silence('never-made') is False
    assert names(ledger) == ['maint-b']


def test_an_ended_silence_is_pruned_by_the_next_put(ledger):
    assert ledger.put_silence(ended('was')) is True
    assert names(ledger) == ['was']
    assert ledger.put_silence(running('is')) is True
    assert names(ledger) == ['is']


def test_an_ended_silence_is_pruned_by_the_next_remove_even_of_another_or_of_none(ledger):
    ledger.put_silence(running('is'))
    ledger.put_silence(ended('was'))
    assert names(ledger) == ['is', 'was']
    assert ledger.remove_silence('never-made') is False
    assert names(ledger) == ['is']

    ledger.put_silence(ended('was'))
    assert ledger.remove_silence('is') is True
    assert names(ledger) == []


def test_removing_an_ended_silence_by_name_says_it_was_there(ledger):
    ledger.put_silence(ended('was'))
    assert ledger.remove_silence('was') is True
    assert names(ledger) == []


def test_prune_drops_ended_silences_and_keeps_running_ones(ledger):
    ledger.put_silence(running('long', ends=time.time() + 2 * HOUR))
    ledger.put_silence(running('short', ends=time.time() + 60))
    ledger.prune(now=time.time() + HOUR)
    assert names(ledger) == ['long']
    ledger.prune()
    assert names(ledger) == ['long']


def test_silences_are_seen_and_removed_through_another_connection(ledger_backend, ledger):
    ledger.put_silence(running('maint', hosts=('db*',)))
    other = ledger_backend.open()
    assert [silence.name for silence in other.silences()] == ['maint']
    assert other.remove_silence('maint') is True
    assert ledger.silences() == []


# -- withheld Alarms ------------------------------------------------------------------------------------


def test_a_withheld_alarm_keeps_what_was_stated(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    alarm = make_alert()
    before = time.time()
    ledger.withhold(key, alarm, ('web1', 'web2'), 'maint')

    [item] = ledger.withheld(key, alarm.alert_id)
    assert isinstance(item, Withheld)
    assert item.silence == 'maint'
    assert item.record == Record(alarm.alert_id, 'Alarm', alarm.fingerprint, alarm.payload, item.record.updated, False, ('web1', 'web2'))
    assert before - 1 <= item.record.updated <= time.time() + 1
    # Not sent, so neither on record nor queued.
    assert ledger.lookup(key, alarm.alert_id) is None
    assert ledger.pending(key) == []
    assert ledger.entries() == []


def test_withheld_is_per_endpoint_or_of_every_endpoint_with_none(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(alert_id='disk'), ['web1'], 'maint')
    ledger.withhold(key, make_alert(alert_id='load'), ['web1'], 'maint')
    ledger.withhold(OTHER_ENDPOINT, make_alert(alert_id='disk'), ['web1'], 'rotated')

    assert withheld_ids(ledger, key) == [('maint', 'disk'), ('maint', 'load')]
    assert withheld_ids(ledger, OTHER_ENDPOINT) == [('rotated', 'disk')]
    assert withheld_ids(ledger, None) == [('maint', 'disk'), ('maint', 'load'), ('rotated', 'disk')]
    assert [item.silence for item in ledger.withheld(None, 'disk')] in (['maint', 'rotated'], ['rotated', 'maint'])
    assert [item.record.alert_id for item in ledger.withheld(key, 'load')] == ['load']
    assert ledger.withheld(key, 'other') == []
    assert ledger.withheld('f' * 64) == []


def test_withholding_again_replaces_what_was_withheld(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(description='first'), ['web1'], 'maint-a')
    ledger.withhold(key, make_alert(description='second'), ['web2'], 'maint-b')
    [item] = ledger.withheld(key)
    assert (item.silence, item.record.payload['description'], item.record.hosts) == ('maint-b', 'second', ('web2',))


def test_forget_withheld_forgets_one_alert_of_one_endpoint(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(alert_id='disk'), [], 'maint')
    ledger.withhold(key, make_alert(alert_id='load'), [], 'maint')
    ledger.withhold(OTHER_ENDPOINT, make_alert(alert_id='disk'), [], 'maint')

    assert ledger.forget_withheld(key, 'disk') is True
    assert ledger.forget_withheld(key, 'disk') is False
    assert ledger.forget_withheld(key, 'never-withheld') is False
    assert withheld_ids(ledger, None) == [('maint', 'disk'), ('maint', 'load')]
    assert withheld_ids(ledger, OTHER_ENDPOINT) == [('maint', 'disk')]


def test_record_clears_what_was_withheld_for_that_alert_only(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(alert_id='disk'), [], 'maint')
    ledger.withhold(key, make_alert(alert_id='load'), [], 'maint')
    ledger.withhold(OTHER_ENDPOINT, make_alert(alert_id='disk'), [], 'maint')

    ledger.record(OTHER_ENDPOINT, make_alert(alert_id='load'))
    ledger.record(key, make_alert(alert_id='cpu'))
    assert len(ledger.withheld(None)) == 3

    ledger.record(key, make_alert(alert_id='disk', status='OK'))
    assert withheld_ids(ledger, key) == [('maint', 'load')]
    assert withheld_ids(ledger, OTHER_ENDPOINT) == [('maint', 'disk')]


def test_record_under_a_claim_clears_what_was_withheld(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(), [], 'maint')
    with ledger.claim(key, make_alert().alert_id, lease=30) as claim:
        ledger.record(key, make_alert(), claim=claim)
    assert ledger.withheld(key) == []


def test_delivered_clears_what_was_withheld_but_queuing_does_not(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.withhold(key, make_alert(), ['web1'], 'maint')
    ledger.queue(key, make_alert(), ['web1'])
    # Queued is not yet sent: until it is delivered, the withheld Alarm is still the last word Temperstack lacks.
    assert withheld_ids(ledger, key) == [('maint', make_alert().alert_id)]

    [queued] = ledger.pending(key)
    assert ledger.delivered(key, queued) is True
    assert ledger.withheld(key) == []


def test_a_delivery_another_sender_made_first_clears_nothing(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.queue(key, make_alert())
    [queued] = ledger.pending(key)
    assert ledger.delivered(key, queued) is True
    ledger.withhold(key, make_alert(description='worse'), [], 'maint')

    # The same entry, delivered again by a sender that was late: it is gone, and nothing is written.
    assert ledger.delivered(key, queued) is False
    assert withheld_ids(ledger, key) == [('maint', make_alert().alert_id)]


# -- streaks --------------------------------------------------------------------------------------------


def test_streak_counts_one_status_in_a_row_and_the_other_status_starts_again(ledger, endpoint):
    key = endpoint.ledger_key
    counts = [ledger.streak(key, 'disk', status) for status in ('Alarm', 'Alarm', 'Alarm', 'OK', 'OK', 'Alarm', 'OK')]
    assert counts == [1, 2, 3, 1, 2, 1, 1]


def test_streaks_are_per_endpoint_and_alert(ledger, endpoint):
    key = endpoint.ledger_key
    assert [ledger.streak(key, 'disk', 'Alarm') for _decision in range(2)] == [1, 2]
    assert ledger.streak(key, 'load', 'Alarm') == 1
    assert ledger.streak(OTHER_ENDPOINT, 'disk', 'Alarm') == 1
    assert ledger.streak(key, 'disk', 'Alarm') == 3


def test_streak_without_counting_says_what_counting_would_and_writes_nothing(ledger_backend, ledger, endpoint):
    key = endpoint.ledger_key
    ledger.streak(key, 'disk', 'Alarm')
    ledger.streak(key, 'disk', 'Alarm')
    before = ledger_backend.contents()

    assert ledger.streak(key, 'disk', 'Alarm', count=False) == 3
    assert ledger.streak(key, 'disk', 'Alarm', count=False) == 3
    assert ledger.streak(key, 'disk', 'OK', count=False) == 1
    assert ledger.streak(key, 'new', 'Alarm', count=False) == 1
    assert ledger.streak(OTHER_ENDPOINT, 'disk', 'Alarm', count=False) == 1
    assert ledger_backend.contents() == before
    assert ledger.streak(key, 'disk', 'Alarm') == 3


def test_a_streak_untouched_for_the_retention_is_pruned(ledger, endpoint):
    key = endpoint.ledger_key
    ledger.streak(key, 'disk', 'Alarm')
    ledger.streak(key, 'disk', 'Alarm')
    ledger.prune(retention=HOUR, now=time.time() + 60)
    assert ledger.streak(key, 'disk', 'Alarm', count=False) == 3
    ledger.prune(retention=HOUR, now=time.time() + 2 * HOUR)
    assert ledger.streak(key, 'disk', 'Alarm', count=False) == 1


# -- what is open: records and entries --------------------------------------------------------------------


def test_records_are_the_acknowledged_records_of_one_endpoint(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(alert_id='disk'), ['web1'])
    ledger.record(key, make_alert(alert_id='load', status='OK'))
    ledger.record(OTHER_ENDPOINT, make_alert(alert_id='cpu'))
    ledger.queue(key, make_alert(alert_id='queued'))
    ledger.queue(key, make_alert(alert_id='disk', status='OK'))
    ledger.withhold(key, make_alert(alert_id='withheld'), [], 'maint')
    ledger.hold(key, make_alert(alert_id='held'), ['web2'], token='run-1', owner='somewhere-else:1')

    records = {record.alert_id: record for record in ledger.records(key)}
    assert sorted(records) == ['disk', 'load']
    # What Temperstack acknowledged, not the OK still queued for it.
    assert (records['disk'].status, records['disk'].pending, records['disk'].hosts) == ('Alarm', False, ('web1',))
    assert records['load'].status == 'OK'
    assert [record.alert_id for record in ledger.records(OTHER_ENDPOINT)] == ['cpu']
    assert ledger.records('f' * 64) == []

    for queued in ledger.pending(key):
        assert ledger.delivered(key, queued) is True
    records = {record.alert_id: record for record in ledger.records(key)}
    assert sorted(records) == ['disk', 'load', 'queued']
    assert records['disk'].status == 'OK'


def test_entries_show_attempts_and_holds_of_every_endpoint(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    first = ledger.queue(key, make_alert(alert_id='disk'), ['web1'])
    ledger.hold(key, make_alert(alert_id='held'), ['web2'], token='run-1', owner='somewhere-else:1')
    elsewhere = ledger.queue(OTHER_ENDPOINT, make_alert(alert_id='disk', status='OK'))
    for _attempt in range(3):
        ledger.attempted(first)
    ledger.attempted(elsewhere)

    entries = ledger.entries()
    assert [(entry.endpoint, entry.alert.alert_id, entry.alert.status, entry.hosts, entry.attempts, entry.held)
            for entry in entries] == [
        (key, 'disk', 'Alarm', ('web1',), 3, False),
        (key, 'held', 'Alarm', ('web2',), 0, True),
        (OTHER_ENDPOINT, 'disk', 'OK', (), 1, False),
    ]
    assert [entry.seq for entry in entries] == sorted(entry.seq for entry in entries)
    assert (entries[0].seq, entries[2].seq) == (first, elsewhere)
    assert entries[0].alert.payload == make_alert(alert_id='disk').payload
    assert all(time.time() - 60 < entry.queued <= time.time() + 1 for entry in entries)

    # Released, a held entry is an ordinary one; a delivered one is gone, attempts and all.
    ledger.release_holds('run-1')
    [queued, *_rest] = ledger.pending(key)
    assert ledger.delivered(key, queued) is True
    assert [(entry.alert.alert_id, entry.attempts, entry.held) for entry in ledger.entries()] == [
        ('held', 0, False), ('disk', 1, False)]


def test_attempts_survive_another_connection(ledger_backend, ledger, endpoint, make_alert):
    seq = ledger.queue(endpoint.ledger_key, make_alert())
    ledger.attempted(seq)
    other = ledger_backend.open()
    other.attempted(seq)
    assert [entry.attempts for entry in ledger.entries()] == [2]


# -- read-only ledgers (check mode, alert_info) ------------------------------------------------------------


def test_a_missing_ledger_read_only_is_empty_and_stays_missing(ledger_backend, endpoint):
    ledger_backend.remove()
    reader = ledger_backend.open(read_only=True)
    key = endpoint.ledger_key

    assert reader.records(key) == []
    assert reader.entries() == []
    assert reader.silences() == []
    assert reader.withheld(None) == []
    assert reader.withheld(key) == []
    assert reader.withheld(key, 'disk') == []
    assert reader.streak(key, 'disk', 'Alarm', count=False) == 1
    assert not ledger_backend.exists()


def test_a_missing_ledger_read_only_refuses_silence_withheld_and_streak_writes(ledger_backend, endpoint, make_alert):
    ledger_backend.remove()
    reader = ledger_backend.open(read_only=True)
    key = endpoint.ledger_key
    writes = {
        'put_silence': lambda: reader.put_silence(running('maint')),
        'remove_silence': lambda: reader.remove_silence('maint'),
        'withhold': lambda: reader.withhold(key, make_alert(), [], 'maint'),
        'forget_withheld': lambda: reader.forget_withheld(key, make_alert().alert_id),
        'streak': lambda: reader.streak(key, 'disk', 'Alarm'),
    }
    for name, write in writes.items():
        with pytest.raises(LedgerError):
            write()
            pytest.fail(f'{name} wrote to a read-only ledger')
    assert not ledger_backend.exists()


def test_an_existing_ledger_read_only_shows_everything_and_changes_nothing(ledger_backend, ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(alert_id='disk'), ['web1'])
    seq = ledger.queue(key, make_alert(alert_id='load'))
    ledger.attempted(seq)
    ledger.put_silence(running('maint'))
    ledger.withhold(key, make_alert(alert_id='cpu'), ['web1'], 'maint')
    ledger.streak(key, 'disk', 'Alarm')
    before = ledger_backend.contents()

    reader = ledger_backend.open(read_only=True)
    assert [record.alert_id for record in reader.records(key)] == ['disk']
    assert [(entry.alert.alert_id, entry.attempts) for entry in reader.entries()] == [('load', 1)]
    assert [silence.name for silence in reader.silences()] == ['maint']
    assert withheld_ids(reader, None) == [('maint', 'cpu')]
    assert reader.streak(key, 'disk', 'Alarm', count=False) == 2
    for write in (lambda: reader.put_silence(running('other')), lambda: reader.remove_silence('maint'),
                  lambda: reader.forget_withheld(key, 'cpu'), lambda: reader.streak(key, 'disk', 'Alarm')):
        with pytest.raises(LedgerError):
            write()
    assert ledger_backend.contents() == before
