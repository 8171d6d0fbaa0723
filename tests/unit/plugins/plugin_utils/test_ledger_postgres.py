# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The PostgreSQL ledger's handling of its URL, with no server (the contract itself: test_ledger_contract.py)."""

from __future__ import annotations

import pathlib
import socket
import time

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_postgres
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError, LedgerUnreachable
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    is_url,
    ledger_spec,
    mask_url,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger

PASSWORD = 'S3cret-pg'


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('url, masked', [
    (f'postgresql://ops:{PASSWORD}@db.example.com:5432/ansible', 'postgresql://ops:********@db.example.com:5432/ansible'),
    (f'postgres://ops:{PASSWORD}@db/ansible?sslmode=verify-full', 'postgres://ops:********@db/ansible?sslmode=verify-full'),
    (f'postgresql://db/ansible?user=ops&password={PASSWORD}&sslmode=require', 'postgresql://db/ansible?user=ops&password=********&sslmode=require'),
    (f'postgresql://db/ansible?PASSWORD={PASSWORD}', 'postgresql://db/ansible?PASSWORD=********'),
    ('postgresql://ops@db/ansible', 'postgresql://ops@db/ansible'),
    (f'postgresql://ops:{PASSWORD}@[bad/db', 'postgresql://ops:********@[bad/db'),
])
def test_mask_url_hides_the_password_wherever_it_is(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize('spec', ['postgresql://h/db', 'postgres://h/db', 'PostgreSQL://h/db'])
def test_postgresql_uris_are_urls(spec):
    assert is_url(spec)


@pytest.mark.parametrize('spec', [None, '', '/var/lib/ledger.sqlite3', 'postgresql:/h/db', 'sqlite:///x', 'postgresql'])
def test_anything_else_is_not(spec):
    assert not is_url(spec)


def test_ledger_url_wins_over_ledger_path():
    assert ledger_spec('postgresql://h/db', '/tmp/ledger.sqlite3') == 'postgresql://h/db'
    assert ledger_spec(None, '/tmp/ledger.sqlite3') == '/tmp/ledger.sqlite3'


def test_check_ledger_url_names_the_option_and_masks():
    with pytest.raises(LedgerError, match=r'^ledger_url must be a PostgreSQL connection URI') as caught:
        check_ledger_url(f'mysql://u:{PASSWORD}@h/db')
    assert PASSWORD not in str(caught.value)


def test_an_unparsable_uri_is_a_ledger_error_without_its_password():
    with pytest.raises(LedgerError) as caught:
        open_ledger(f'postgresql://ops:{PASSWORD}@[bad/db')
    assert not isinstance(caught.value, LedgerUnreachable)
    assert 'is not a valid PostgreSQL connection URI' in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_refused_connection_is_unreachable_at_once_and_masked():
    started = time.monotonic()
    with pytest.raises(LedgerUnreachable) as caught:
        open_ledger(f'postgresql://ops:{PASSWORD}@127.0.0.1:{closed_port()}/ansible')
    assert time.monotonic() - started < 5
    assert str(caught.value).startswith('the ledger at postgresql://ops:********@127.0.0.1:')
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize('given, used', [('0', 5), ('-3', 5), ('x', 5), ('2', 2), ('300', 30), ('2.5', 2)])
def test_the_connect_timeout_stays_bounded(given, used):
    assert _ledger_postgres._bounded_connect_timeout(given) == used  # pylint: disable=protected-access


def test_without_psycopg_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(_ledger_postgres, 'psycopg', None)

    with pytest.raises(LedgerError, match=r"pip install 'psycopg\[binary\]'"):
        open_ledger('postgresql://h/db')


def test_the_fleet_guide_gives_the_dba_exactly_the_schema_the_code_creates():
    guide = (pathlib.Path(__file__).parents[4] / 'docs' / 'fleet.md').read_text(encoding='utf-8')
    block = guide.split('<!-- schema-sql -->', 1)[1].split('```sql\n', 1)[1].split('```', 1)[0]

    assert block.strip() == _ledger_postgres.SCHEMA_SQL.strip()
