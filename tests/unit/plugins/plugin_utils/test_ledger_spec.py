# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""ledger_url as users give it: which ledger it names, and how it is shown without its password."""

from __future__ import annotations

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    check_ledger_url,
    mask_passwords,
    mask_url,
)

SECRET = 'Hunter2SecretPW'


@pytest.mark.parametrize('url', [
    f'postgresql://ts_user:{SECRET}@db.example.com/temperstack',
    f'postgresql://ts_user:{SECRET}@[::1/temperstack',  # an IPv6 bracket never closed
    f'postgresql://ts_user@[::1/temperstack?password={SECRET}',
    f'postgresql://ts_user@db.example.com/temperstack?sslmode=require&password={SECRET}%ZZ',  # a bad %-escape
    f'postgres://ts_user:{SECRET}@db:notaport/x',
    f'mysql://ts_user:{SECRET}@db.example.com/x',  # another scheme
    f'https://ts_user:{SECRET}@db.example.com/x',
    f'host=db.example.com user=ts_user password={SECRET} dbname=x',  # a key/value connection string
    f"host=db password='{SECRET} with spaces' dbname=x",
    f'postgresql://ts_user:{SECRET}@db1,db2:5433/x?target_session_attrs=read-write',
    # Characters a password may hold that were never %-encoded: libpq reads the user part up to its last '@'.
    f'postgresql://ts_user:{SECRET}#1@127.0.0.1:1/temperstack',
    f'postgresql://ts_user:{SECRET}?1@127.0.0.1:1/temperstack',
    f'postgresql://ts_user:{SECRET}/1@127.0.0.1:1/temperstack',
    f'postgresql://ts_user:{SECRET} 1@127.0.0.1:1/temperstack',
    f'postgresql://ts_user:{SECRET}#1@[::1/temperstack',
    f'postgresql://ts_user@127.0.0.1:1/temperstack?password={SECRET}%ZZ',
])
def test_no_password_survives_masking_whatever_the_url(url):
    shown = mask_url(url)
    assert 'Hunter2' not in shown
    assert '********' in shown


def test_masking_keeps_what_tells_the_user_which_server():
    assert mask_url(f'postgresql://ts_user:{SECRET}@db.example.com:5433/temperstack?sslmode=require') == (
        'postgresql://ts_user:********@db.example.com:5433/temperstack?sslmode=require')
    assert mask_url('postgresql://ts_user@db.example.com/temperstack') == 'postgresql://ts_user@db.example.com/temperstack'


@pytest.mark.parametrize('url', [
    f'mysql://ts_user:{SECRET}@db.example.com/x',
    f'postgresql:/ts_user:{SECRET}@db.example.com/x',
    f'ts_user:{SECRET}@db.example.com/x',
    f'host=db password={SECRET}',
])
def test_a_url_that_is_not_a_postgresql_uri_is_refused_without_its_password(url):
    with pytest.raises(LedgerError, match='ledger_url must be a PostgreSQL connection URI') as refused:
        check_ledger_url(url)
    assert 'Hunter2' not in str(refused.value)


@pytest.mark.parametrize('quoted', ['Hunter2SecretPW', 'Hunter2SecretPW#1', 'Hunter2SecretPW 1'])
def test_a_password_quoted_back_in_part_or_whole_is_masked(quoted):
    url = f'postgresql://ts_user:{quoted}@127.0.0.1:1/temperstack'
    assert 'Hunter2' not in mask_passwords(f'invalid URI query parameter: "{quoted.split("#")[0]}"', url)


def test_what_a_driver_quotes_back_is_masked_decoded_and_short_passwords_only_as_words():
    url = 'postgresql://u:p%40ss%2Bword@db/x'
    assert mask_passwords('authentication failed for p@ss+word and p%40ss%2Bword', url).count('********') == 2
    short = 'postgresql://u:p@db/x'
    assert mask_passwords('password p expired', short) == 'password ******** expired'
