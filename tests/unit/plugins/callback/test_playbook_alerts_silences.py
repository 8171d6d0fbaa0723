# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The playbook_alerts callback and silences (issue 12), run after run against one ledger and a fake Temperstack.

The runs, the fake Temperstack and its delivery process are test_playbook_alerts.py's.
"""

from __future__ import annotations

import time

from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Silence
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger

# run and temperstack are fixtures: each test plays several ansible-playbook runs against the fake Temperstack.
from ansible_collections.temperstack.alerting.tests.unit.plugins.callback.test_playbook_alerts import (  # pylint: disable=unused-import
    exit_run,
    failing_run,
    green_run,
    held_alarms,
    run,
    temperstack,
)

HOUR = 3600.0


def put_silence(ledger_path: str, name: str, **matchers) -> Silence:
    silence = Silence(name, **matchers, starts=time.time() - 60, ends=time.time() + HOUR)
    with SqliteLedger(ledger_path) as ledger:
        ledger.put_silence(silence)
    return silence


def remove_silence(ledger_path: str, name: str) -> None:
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.remove_silence(name) is True


def withheld(r) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The Alarms withheld for the run's endpoint: (silence, alert id, status, hosts)."""
    with SqliteLedger(r.options['ledger_path']) as ledger:
        return [(item.silence, item.record.alert_id, item.record.status, item.record.hosts)
                for item in ledger.withheld(r.callback._endpoint_key)]


def outbox(r) -> list[tuple[str, bool]]:
    with SqliteLedger(r.options['ledger_path']) as ledger:
        return [(entry.alert.status, entry.held) for entry in ledger.entries()]


def test_a_silence_covering_a_failed_play_withholds_its_alarm(run, temperstack, ledger_path):
    put_silence(ledger_path, 'web-maint', hosts=('web*',))

    r = failing_run(run, host='web1')

    assert temperstack.received == []
    assert r.summary == ['Temperstack: sent nothing; 1 Alarm withheld by silence web-maint']
    assert r.display.warnings == []
    [(silence, alert_id, status, hosts)] = withheld(r)
    assert (silence, status, hosts) == ('web-maint', 'Alarm', ('web1',))
    assert alert_id.startswith('ansible-site-yml-deploy-web-tier-')
    # Not held, not queued, not on record: nothing is left for a later run or the delivery process to send.
    assert outbox(r) == []
    with SqliteLedger(ledger_path) as ledger:
        assert held_alarms(ledger, r) == 0
        assert ledger.lookup(r.callback._endpoint_key, alert_id) is None


def test_a_failure_a_silence_covers_is_not_held_so_an_interrupted_run_sends_nothing(run, temperstack, ledger_path):
    put_silence(ledger_path, 'web-maint', hosts=('web*',))
    r = run().playbook().play().ok('web2').failed('web1')
    assert outbox(r) == []

    exit_run(temperstack)

    assert temperstack.received == []
    assert outbox(r) == []


def test_the_summary_counts_the_alarms_each_silence_withheld(run, temperstack, ledger_path):
    put_silence(ledger_path, 'z-web', hosts=('web*',))
    put_silence(ledger_path, 'a-db', hosts=('db*',))

    r = run().playbook().play('Web').failed('web1').play('Cache').failed('web2').play('Db').failed('db1').play('Other').failed('app1').stats()

    assert temperstack.status_list == ['Alarm']
    assert 'app1' in temperstack.received[0]['description']
    assert r.summary == ['Temperstack: sent 1 Alarm; 1 Alarm withheld by silence a-db; 2 Alarms withheld by silence z-web']


def test_a_silence_that_does_not_cover_the_play_withholds_nothing(run, temperstack, ledger_path):
    put_silence(ledger_path, 'db-maint', hosts=('db*',))
    put_silence(ledger_path, 'other-playbook', alert_ids=('ansible-other-yml-*',))
    put_silence(ledger_path, 'Web-case', hosts=('Web*',))

    r = failing_run(run, host='web1')

    assert temperstack.status_list == ['Alarm']
    assert r.summary == ['Temperstack: sent 1 Alarm']
    assert withheld(r) == []


def test_a_silence_by_alert_id_covers_the_callbacks_alerts_of_a_playbook(run, temperstack, ledger_path):
    put_silence(ledger_path, 'site', alert_ids=('ansible-site-yml-*',))

    r = failing_run(run)

    assert temperstack.received == []
    assert r.summary == ['Temperstack: sent nothing; 1 Alarm withheld by silence site']


def test_a_recovery_after_a_withheld_alarm_sends_nothing_and_forgets_it(run, temperstack, ledger_path):
    put_silence(ledger_path, 'web-maint', hosts=('web*',))
    failing_run(run)

    r = green_run(run)

    assert temperstack.received == []
    assert r.summary == []
    assert withheld(r) == []
    assert outbox(r) == []


def test_a_recovery_after_the_silence_ended_still_sends_nothing_for_an_alarm_never_sent(run, temperstack, ledger_path):
    put_silence(ledger_path, 'web-maint', hosts=('web*',))
    failing_run(run)
    remove_silence(ledger_path, 'web-maint')

    r = green_run(run)

    assert temperstack.received == []
    assert withheld(r) == []


def test_once_the_silence_is_removed_a_failing_run_sends_the_alarm(run, temperstack, ledger_path):
    put_silence(ledger_path, 'web-maint', hosts=('web*',))
    [(_silence, alert_id, _status, _hosts)] = withheld(failing_run(run))
    again = failing_run(run)
    remove_silence(ledger_path, 'web-maint')

    r = failing_run(run)

    assert temperstack.statuses == [('Alarm', alert_id)]
    assert again.summary == ['Temperstack: sent nothing; 1 Alarm withheld by silence web-maint']
    assert r.summary == ['Temperstack: sent 1 Alarm']
    assert withheld(r) == []
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'OK']


def test_an_alarm_temperstack_holds_is_not_withheld_again_and_its_ok_goes_out_during_the_silence(run, temperstack, ledger_path):
    failing_run(run)
    put_silence(ledger_path, 'web-maint', hosts=('web*',))

    still_failing = failing_run(run)
    recovered = green_run(run)

    assert still_failing.summary == []
    assert recovered.summary == ['Temperstack: sent 1 OK']
    assert temperstack.status_list == ['Alarm', 'OK']
    assert withheld(recovered) == []


def test_a_worse_alarm_during_the_silence_is_withheld_and_the_ok_still_resolves_the_first(run, temperstack, ledger_path):
    failing_run(run, msg='disk full')
    put_silence(ledger_path, 'web-maint', hosts=('web*',))

    worse = failing_run(run, msg='out of memory')
    assert worse.summary == ['Temperstack: sent nothing; 1 Alarm withheld by silence web-maint']
    assert [(silence, status) for silence, _alert_id, status, _hosts in withheld(worse)] == [('web-maint', 'Alarm')]

    recovered = green_run(run)

    assert temperstack.status_list == ['Alarm', 'OK']
    assert 'disk full' in temperstack.received[0]['description']
    assert withheld(recovered) == []
