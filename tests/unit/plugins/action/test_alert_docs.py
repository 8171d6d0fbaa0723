# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The module's documentation is a separate file from its implementation, so nothing in ansible-test
compares them: this does."""

from __future__ import annotations

import yaml

from ansible_collections.temperstack.alerting.plugins.action.alert import ARGUMENT_SPEC
from ansible_collections.temperstack.alerting.plugins.doc_fragments.connection import ModuleDocFragment
from ansible_collections.temperstack.alerting.plugins.modules import alert as alert_docs
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import FIELDS, PRIORITIES, STATUSES


def documented_options() -> dict:
    options = dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options'])
    options.update(yaml.safe_load(alert_docs.DOCUMENTATION)['options'])
    return options


def test_every_option_is_documented_and_every_documented_option_exists():
    assert set(documented_options()) == set(ARGUMENT_SPEC)


def test_types_and_defaults_match():
    for name, doc in documented_options().items():
        spec = ARGUMENT_SPEC[name]
        # The alert fields are documented as strings and type-checked by the core (spec type raw).
        expected_type = 'raw' if name in FIELDS else doc.get('type', 'str')
        assert spec['type'] == expected_type, name
        assert spec.get('default') == doc.get('default'), name


def test_secrets_are_no_log():
    assert ARGUMENT_SPEC['webhook_url']['no_log'] is True
    assert ARGUMENT_SPEC['api_key']['no_log'] is True
    assert ARGUMENT_SPEC['ledger_url']['no_log'] is True


def test_documented_choices_are_the_seed_values():
    options = documented_options()
    assert tuple(options['status']['choices']) == STATUSES
    assert tuple(options['alert_priority']['choices']) == PRIORITIES


def test_fragment_and_callback_fragment_document_the_same_connection_options():
    module_side = set(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options'])
    callback_side = yaml.safe_load(ModuleDocFragment.CALLBACK)['options']
    assert module_side == set(callback_side)
    for name, doc in callback_side.items():
        assert doc['ini'] == [{'section': 'callback_temperstack', 'key': name}], name
        assert doc['env'][0]['name'] == 'TEMPERSTACK_' + name.upper(), name
