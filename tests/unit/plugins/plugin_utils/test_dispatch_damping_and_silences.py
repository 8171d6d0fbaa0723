# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""dispatch() with flap damping and silences, on every ledger backend, with the fake opener as Temperstack."""

from __future__ import annotations

import time

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import Outcome, dispatch
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Ledger, Silence

from ansible_collections.temperstack.alerting.tests.unit.plugins.plugin_utils.conftest import LedgerBackend

HOUR = 3600.0


@pytest.fixture
def ledger(ledger_backend: LedgerBackend) -> Ledger:
    return ledger_backend.open()


@pytest.fixture
def client(endpoint, opener, sleeps):
    return TemperstackClient(endpoint, retries=0, opener=opener, sleep=sleeps.append, jitter=lambda: 0.5)


@pytest.fixture
def decide(ledger, endpoint, client):
    """dispatch() of one alert against the test's ledger and the fake opener."""

    def run(alert, **options) -> Outcome:
        return dispatch(alert, endpoint, ledger, client, **options)

    return run


def silence(name: str = 'maint', starts: float | None = None, ends: float | None = None, **matchers) -> Silence:
    now = time.time()
    return Silence(
        name, **matchers, starts=now - 60 if starts is None else starts, ends=now + HOUR if ends is None else ends,
    )


def sent(opener) -> list[tuple[str, str]]:
    return [(body['status'], body.get('description', '')) for body in opener.bodies]


def state(ledger, endpoint, alert_id):
    """What the ledger holds for the alert: (recorded status or None, queued statuses, withheld silences)."""
    key = endpoint.ledger_key
    record = ledger.lookup(key, alert_id)
    return (
        None if record is None else record.status,
        [queued.alert.status for queued in ledger.pending(key)],
        [item.silence for item in ledger.withheld(key, alert_id)],
    )


# -- flap damping -----------------------------------------------------------------------------------------


def test_an_alarm_goes_out_the_nth_time_in_a_row(decide, ledger, endpoint, opener, make_alert):
    alarm = make_alert()
    outcomes = [decide(alarm, damping=(3, 1)) for _decision in range(4)]

    assert [(o.damped, o.changed, o.sent) for o in outcomes] == [
        ('1 of 3', False, False), ('2 of 3', False, False), ('', True, True), ('', False, False)]
    assert outcomes[0] == Outcome(alarm, None, changed=False, damped='1 of 3')
    assert sent(opener) == [('Alarm', alarm.payload['description'])]
    assert state(ledger, endpoint, alarm.alert_id) == ('Alarm', [], [])


def test_an_ok_goes_out_the_mth_time_in_a_row(decide, opener, make_alert):
    decide(make_alert())
    outcomes = [decide(make_alert(status='OK'), damping=(1, 2)) for _decision in range(3)]

    assert [(o.damped, o.sent) for o in outcomes] == [('1 of 2', False), ('', True), ('', False)]
    assert [status for status, _description in sent(opener)] == ['Alarm', 'OK']


def test_the_other_status_starts_the_count_again(decide, opener, make_alert):
    damping = (2, 2)
    alarm, ok = make_alert(), make_alert(status='OK')
    assert decide(alarm, damping=damping).damped == '1 of 2'
    assert decide(ok, damping=damping).damped == '1 of 2'
    assert decide(alarm, damping=damping).damped == '1 of 2'
    assert decide(alarm, damping=damping).sent is True
    # A single good probe between failures resolves nothing.
    assert decide(ok, damping=damping).damped == '1 of 2'
    assert decide(alarm, damping=damping).damped == ''
    assert decide(ok, damping=damping).damped == '1 of 2'
    assert decide(ok, damping=damping).sent is True
    assert [status for status, _description in sent(opener)] == ['Alarm', 'OK']


def test_force_sends_at_once_whatever_the_count(decide, ledger, endpoint, opener, make_alert):
    outcome = decide(make_alert(), damping=(3, 1), force=True)
    assert (outcome.damped, outcome.changed, outcome.sent) == ('', True, True)
    assert sent(opener) == [('Alarm', make_alert().payload['description'])]
    assert state(ledger, endpoint, make_alert().alert_id) == ('Alarm', [], [])


def test_check_mode_says_what_counting_would_say_and_counts_nothing(decide, ledger, endpoint, opener, make_alert):
    alarm = make_alert()
    assert [decide(alarm, damping=(2, 1), check_mode=True).damped for _decision in range(3)] == ['1 of 2'] * 3
    assert ledger.streak(endpoint.ledger_key, alarm.alert_id, 'Alarm', count=False) == 1

    assert decide(alarm, damping=(2, 1)).damped == '1 of 2'
    would = decide(alarm, damping=(2, 1), check_mode=True)
    assert (would.damped, would.changed, would.sent) == ('', True, False)
    assert decide(alarm, damping=(2, 1)).sent is True
    assert len(opener.calls) == 1


# -- silences ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('matchers, hosts', [
    ({'alert_ids': ('ansible-disk-*',)}, ()),
    ({'resource_ids': ('web0?',)}, ()),
    ({'hosts': ('web*',)}, ('db1', 'web01')),
    ({'alert_ids': ('ansible-*',), 'resource_ids': ('web01',), 'hosts': ('web01',)}, ('web01',)),
], ids=['alert_id', 'resource_id', 'hosts', 'all-three'])
def test_a_silence_withholds_an_alarm_and_remembers_it(decide, ledger, endpoint, opener, make_alert, matchers, hosts):
    ledger.put_silence(silence('maint', **matchers))
    alarm = make_alert()
    assert alarm.alert_id.startswith('ansible-disk-')

    outcome = decide(alarm, hosts=hosts)

    assert outcome == Outcome(alarm, None, changed=False, silenced='maint')
    assert opener.calls == []
    assert state(ledger, endpoint, alarm.alert_id) == (None, [], ['maint'])
    [item] = ledger.withheld(endpoint.ledger_key)
    assert (item.record.payload, item.record.hosts) == (alarm.payload, hosts)


@pytest.mark.parametrize('matchers, hosts', [
    ({'alert_ids': ('ansible-cpu-*',)}, ()),
    ({'alert_ids': ('ANSIBLE-DISK-*',)}, ()),
    ({'resource_ids': ('db*',)}, ()),
    ({'hosts': ('web*',)}, ('db1',)),
    ({'hosts': ('web*',)}, ()),
    ({'alert_ids': ('ansible-disk-*',), 'hosts': ('db*',)}, ('web01',)),
], ids=['other-alert', 'case', 'other-resource', 'other-host', 'no-host', 'not-every-kind'])
def test_a_silence_that_does_not_cover_the_alarm_lets_it_out(decide, ledger, endpoint, opener, make_alert, matchers, hosts):
    ledger.put_silence(silence('maint', **matchers))
    outcome = decide(make_alert(), hosts=hosts)
    assert (outcome.sent, outcome.silenced) == (True, '')
    assert state(ledger, endpoint, make_alert().alert_id) == ('Alarm', [], [])


def test_a_silence_not_yet_begun_or_already_ended_withholds_nothing(decide, ledger, opener, make_alert):
    now = time.time()
    ledger.put_silence(silence('later', starts=now + HOUR, ends=now + 2 * HOUR, resource_ids=('web01',)))
    ledger.put_silence(silence('done', starts=now - HOUR, ends=now - 1, resource_ids=('web01',)))
    assert decide(make_alert()).silenced == ''
    assert len(opener.calls) == 1


def test_the_first_covering_silence_by_name_is_named(decide, ledger, endpoint, make_alert):
    for name in ('maint-c', 'maint-a', 'maint-b'):
        ledger.put_silence(silence(name, resource_ids=('web01',) if name != 'maint-a' else ('db*',)))
    assert decide(make_alert()).silenced == 'maint-b'
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], ['maint-b'])


def test_check_mode_reports_the_silence_and_remembers_nothing(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    outcome = decide(make_alert(), check_mode=True)
    assert (outcome.silenced, outcome.changed, outcome.sent) == ('maint', False, False)
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], [])
    assert opener.calls == []


def test_an_alarm_temperstack_already_holds_is_not_silenced(decide, ledger, endpoint, opener, make_alert):
    decide(make_alert())
    ledger.put_silence(silence(resource_ids=('web01',)))

    outcome = decide(make_alert())

    assert (outcome.changed, outcome.sent, outcome.silenced) == (False, False, '')
    assert outcome.previous.status == 'Alarm'
    assert state(ledger, endpoint, make_alert().alert_id) == ('Alarm', [], [])
    assert len(opener.calls) == 1


def test_an_ok_after_a_withheld_alarm_never_sent_sends_nothing_and_forgets_it(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    decide(make_alert())

    outcome = decide(make_alert(status='OK'))

    assert (outcome.changed, outcome.sent, outcome.silenced) == (False, False, 'maint')
    assert opener.calls == []
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], [])


def test_an_ok_after_a_withheld_alarm_sends_nothing_even_once_the_silence_has_ended(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    decide(make_alert())
    assert ledger.remove_silence('maint') is True

    outcome = decide(make_alert(status='OK'))

    assert (outcome.sent, outcome.silenced) == (False, 'maint')
    assert opener.calls == []
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], [])


def test_an_ok_in_check_mode_after_a_withheld_alarm_forgets_nothing(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    decide(make_alert())
    outcome = decide(make_alert(status='OK'), check_mode=True)
    assert (outcome.changed, outcome.silenced) == (False, 'maint')
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], ['maint'])


def test_an_ok_for_a_sent_alarm_is_sent_while_a_silence_covers_it(decide, ledger, endpoint, opener, make_alert):
    decide(make_alert())
    ledger.put_silence(silence(resource_ids=('web01',)))
    # A worse Alarm during the maintenance is withheld; Temperstack still holds the first.
    assert decide(make_alert(description='worse')).silenced == 'maint'

    outcome = decide(make_alert(status='OK'))

    assert (outcome.changed, outcome.sent, outcome.silenced) == (True, True, '')
    assert [status for status, _description in sent(opener)] == ['Alarm', 'OK']
    assert state(ledger, endpoint, make_alert().alert_id) == ('OK', [], [])


def test_once_the_silence_has_ended_the_same_alarm_is_sent(decide, ledger, endpoint, opener, make_alert):
    window = silence(resource_ids=('web01',))
    ledger.put_silence(window)
    assert decide(make_alert()).silenced == 'maint'
    assert decide(make_alert()).silenced == 'maint'
    assert opener.calls == []

    ledger.put_silence(window._replace(ends=time.time() - 1))
    outcome = decide(make_alert())

    assert (outcome.changed, outcome.sent, outcome.silenced) == (True, True, '')
    assert sent(opener) == [('Alarm', make_alert().payload['description'])]
    assert state(ledger, endpoint, make_alert().alert_id) == ('Alarm', [], [])


def test_damping_counts_first_and_a_silence_withholds_what_reaches_the_count(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    first = decide(make_alert(), damping=(2, 1))
    assert (first.damped, first.silenced) == ('1 of 2', '')
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], [])

    second = decide(make_alert(), damping=(2, 1))
    assert (second.damped, second.silenced) == ('', 'maint')
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], ['maint'])
    assert opener.calls == []


def test_an_only_if_raised_ok_after_a_withheld_alarm_forgets_it(decide, ledger, endpoint, opener, make_alert):
    ledger.put_silence(silence(resource_ids=('web01',)))
    decide(make_alert(), only_if_raised=True)

    outcome = decide(make_alert(status='OK'), only_if_raised=True)

    assert (outcome.changed, outcome.sent, outcome.silenced) == (False, False, 'maint')
    assert opener.calls == []
    assert state(ledger, endpoint, make_alert().alert_id) == (None, [], [])


def test_an_ok_temperstack_already_holds_ends_an_alarm_withheld_since(decide, ledger, endpoint, opener, make_alert):
    decide(make_alert())
    decide(make_alert(status='OK'))
    ledger.put_silence(silence(resource_ids=('web01',)))
    assert decide(make_alert()).silenced == 'maint'

    outcome = decide(make_alert(status='OK'))

    assert (outcome.changed, outcome.sent, outcome.silenced) == (False, False, 'maint')
    assert state(ledger, endpoint, make_alert().alert_id) == ('OK', [], [])
    assert [status for status, _description in sent(opener)] == ['Alarm', 'OK']
