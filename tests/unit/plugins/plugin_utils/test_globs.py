# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one glob matcher that silences, alert_info, outbox and the silence module share."""

from __future__ import annotations

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._globs import glob_matches, is_glob


@pytest.mark.parametrize('pattern, value, expected', [
    ('db-*', 'db-1', True),
    ('db-*', 'web-1', False),
    ('Web*', 'web1', False),
    ('web*', 'Web1', False),
    ('web?', 'web1', True),
    ('web?', 'web12', False),
    ('web[0-9]', 'web7', True),
    ('web[!0-9]', 'web7', False),
    ('web1', 'web1', True),
    ('web1', 'web1.example.com', False),
    ('*', '', True),
    ('*', 'anything', True),
    ('a/*', 'a/b/c', True),
])
def test_one_pattern_matches_as_fnmatchcase_does(pattern, value, expected):
    assert glob_matches(value, [pattern]) is expected


def test_any_of_several_patterns_matches():
    assert glob_matches('web1', ['db-*', 'web?'])
    assert glob_matches('web1', iter(['db-*', 'web?']))
    assert not glob_matches('web1', ['db-*', 'WEB?'])


def test_no_patterns_match_nothing():
    assert not glob_matches('web1', [])


@pytest.mark.parametrize('text, expected', [
    ('maint-*', True),
    ('db?', True),
    ('[xyz]rest', True),
    ('maint-db', False),
    ('', False),
    ('a.b-c_d', False),
])
def test_a_pattern_has_a_glob_character(text, expected):
    assert is_glob(text) is expected
