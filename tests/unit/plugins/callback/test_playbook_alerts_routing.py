# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The playbook_alerts callback and routing (issue 17): each alert goes to the integration its hosts name.

The runs, the fake Temperstack and its delivery process are test_playbook_alerts.py's; the play's variable manager is
faked here, as Ansible's gives temperstack_integration per host.
"""

from __future__ import annotations

import pytest

# run and temperstack are fixtures: each test plays several ansible-playbook runs against the fake Temperstack.
from ansible_collections.temperstack.alerting.tests.unit.plugins.callback.test_playbook_alerts import (  # pylint: disable=unused-import
    run,
    temperstack,
)

DB_KEY = 'tsk-DB-CANARY-5c1d2e3f4a'
DB_URL = f'https://alerts.example.com/api/integration/webhook/{DB_KEY}'


class FakeVariableManager:
    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def get_vars(self, play=None, host=None, **kwargs):
        self.asked.append(host.get_name())
        name = self.routes.get(host.get_name())
        return {} if name is None else {'temperstack_integration': name}


@pytest.fixture(autouse=True)
def db_integration(monkeypatch):
    monkeypatch.setenv('TEMPERSTACK_WEBHOOK_URL_DB', DB_URL)


def routed_play(r, routes, name='Deploy'):
    r.play(name)
    manager = FakeVariableManager(routes)
    r.play_obj.get_variable_manager = lambda: manager
    return manager


TIERS = {'db1': 'db', 'db2': 'db'}


def test_a_play_failing_on_both_tiers_alerts_each_integration_with_its_hosts(run, temperstack):
    r = run().playbook()
    routed_play(r, TIERS)
    r.ok('web2', 'db2').failed('web1').failed('db1').stats()
    assert sorted((i, s) for i, s, _id in temperstack.routed) == [('db', 'Alarm'), ('default', 'Alarm')]
    by_integration = dict(zip([i for i, _s, _id in temperstack.routed], temperstack.received))
    assert 'db1' in by_integration['db']['description'] and 'web1' not in by_integration['db']['description']
    assert 'web1' in by_integration['default']['description'] and 'db1' not in by_integration['default']['description']
    # One alert id, two services: each integration's OK needs its own hosts only.
    assert by_integration['db']['alert_id'] == by_integration['default']['alert_id']
    green = run().playbook()
    routed_play(green, TIERS)
    green.ok('web1', 'web2', 'db1', 'db2').stats()
    assert sorted((i, s) for i, s, _id in temperstack.routed[2:]) == [('db', 'OK'), ('default', 'OK')]


def test_the_ok_rule_holds_for_each_integration_on_its_own(run, temperstack):
    r = run().playbook()
    routed_play(r, TIERS)
    r.failed('web1').failed('db1').stats()
    again = run().playbook()
    routed_play(again, TIERS)
    again.ok('db1', 'db2').failed('web1').stats()
    # The web tier still fails (old news, nothing sent); the database tier recovered: its OK goes to its integration.
    assert [(i, s) for i, s, _id in temperstack.routed[2:]] == [('db', 'OK')]


def test_an_ok_follows_its_alarm_to_the_integration_a_host_has_left(run, temperstack):
    r = run().playbook()
    routed_play(r, TIERS)
    r.ok('web1').failed('db1').stats()
    assert [(i, s) for i, s, _id in temperstack.routed] == [('db', 'Alarm')]
    moved = run().playbook()
    manager = routed_play(moved, {})  # db1 now names no integration
    moved.ok('web1', 'db1').stats()
    assert [(i, s) for i, s, _id in temperstack.routed[1:]] == [('db', 'OK')]
    assert manager.asked == []  # a green run resolves no host's variables


def test_a_moved_host_that_fails_again_alarms_its_new_integration_and_resolves_nothing(run, temperstack):
    r = run(scope='host').playbook()
    routed_play(r, TIERS)
    r.failed('db1').stats()
    moved = run(scope='host').playbook()
    routed_play(moved, {})
    moved.failed('db1').stats()
    assert [(i, s) for i, s, _id in temperstack.routed] == [('db', 'Alarm'), ('default', 'Alarm')]


def test_host_scope_sends_each_hosts_alert_to_its_integration(run, temperstack):
    r = run(scope='host').playbook()
    routed_play(r, TIERS)
    r.ok('web2').failed('web1').failed('db1').stats()
    assert sorted((i, s) for i, s, _id in temperstack.routed) == [('db', 'Alarm'), ('default', 'Alarm')]
    assert {p['resource_id'] for p in temperstack.received} == {'web1', 'db1'}


def test_playbook_scope_splits_per_integration_across_plays(run, temperstack):
    r = run(scope='playbook').playbook()
    routed_play(r, TIERS, name='Web')
    r.failed('web1')
    routed_play(r, TIERS, name='Database')
    r.failed('db1').stats()
    assert sorted((i, s) for i, s, _id in temperstack.routed) == [('db', 'Alarm'), ('default', 'Alarm')]


def test_none_alerts_nowhere(run, temperstack):
    r = run().playbook()
    routed_play(r, {'lab1': 'none', 'lab2': 'None'})
    r.failed('lab1').failed('lab2').stats()
    assert temperstack.received == []
    assert not any('temperstack' in warning for warning in r.display.warnings)


def test_an_unknown_integration_goes_to_the_default_with_one_warning_per_run(run, temperstack):
    r = run().playbook()
    routed_play(r, {'pay1': 'payments', 'pay2': 'payments'}, name='One')
    r.failed('pay1')
    routed_play(r, {'pay1': 'payments', 'pay2': 'payments'}, name='Two')
    r.failed('pay2').stats()
    assert [(i, s) for i, s, _id in temperstack.routed] == [('default', 'Alarm'), ('default', 'Alarm')]
    warnings = [w for w in r.display.warnings if 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS' in w]
    assert len(warnings) == 1
    assert 'default endpoint' in warnings[0]


def test_an_unknown_integration_without_a_default_says_the_alert_was_not_sent(run, temperstack):
    r = run(api_key=None, base_url=None).playbook()
    routed_play(r, {'pay1': 'payments', 'db1': 'db'})
    r.failed('pay1').failed('db1').failed('web1').stats()
    assert [(i, s) for i, s, _id in temperstack.routed] == [('db', 'Alarm')]
    not_sent = [w for w in r.display.warnings if 'was not sent' in w]
    assert len(not_sent) == 2
    assert any('TEMPERSTACK_WEBHOOK_URL_PAYMENTS' in w for w in not_sent)
    assert any('no default endpoint' in w for w in not_sent)


def test_keys_never_reach_the_output(run, temperstack):
    r = run().playbook()
    routed_play(r, {'db1': 'db', 'pay1': 'payments'})
    r.failed('db1', msg=f'could not reach {DB_URL}').failed('pay1').stats()
    shown = '\n'.join(r.display.lines + r.display.warnings)
    assert DB_KEY not in shown
    assert all(DB_KEY not in str(payload) for payload in temperstack.received)


def test_a_bad_integration_url_falls_back_with_a_warning_naming_the_variable(run, temperstack, monkeypatch):
    monkeypatch.setenv('TEMPERSTACK_WEBHOOK_URL_BROKEN', f'https://alerts.example.com/wrong/{DB_KEY}')
    r = run().playbook()
    routed_play(r, {'b1': 'broken'})
    r.failed('b1').stats()
    assert [(i, s) for i, s, _id in temperstack.routed] == [('default', 'Alarm')]
    [warning] = [w for w in r.display.warnings if 'TEMPERSTACK_WEBHOOK_URL_BROKEN' in w]
    assert DB_KEY not in warning


def test_the_callbacks_integration_option_routes_hosts_that_name_none(run, temperstack):
    r = run(integration='db').playbook()
    routed_play(r, {'web1': 'default'})
    r.failed('app1').failed('web1').stats()
    assert sorted((i, s) for i, s, _id in temperstack.routed) == [('db', 'Alarm'), ('default', 'Alarm')]
    quiet = run(integration='none', scope='host').playbook()
    routed_play(quiet, {})
    quiet.failed('app2').stats()
    assert len(temperstack.routed) == 2
