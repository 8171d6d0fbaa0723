# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures shared by every unit test: an isolated environment, an endpoint, alerts and a fake HTTP opener."""

from __future__ import annotations

import http.client
import io
import json
import multiprocessing
import typing as t
from urllib.error import HTTPError

import pytest
from hypothesis import HealthCheck, settings

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import ENV_VARS, resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import LEDGER_PATH_ENV
from ansible_collections.temperstack.alerting.tests.unit.fakes import FakeResponse

# Deterministic and quiet: the same examples on every run, no example database written into the tree.
settings.register_profile(
    'temperstack-unit',
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile('temperstack-unit')

# Distinctive enough that finding it anywhere (a file, a message) can only mean it leaked.
API_KEY = 'tsk-LEAKCANARY-7f3e9a21c4b8d605'
ORG = 'acme'
WEBHOOK_URL = f'https://{ORG}.temperstack.com/api/integration/webhook/{API_KEY}'


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """No TEMPERSTACK_* variable leaks in from the caller, and ~ is a scratch directory.

    Anything that falls back to the default ledger (~/.ansible/temperstack/ledger.sqlite3) therefore
    writes below tmp_path, never into the real home directory.
    """
    for name in (*ENV_VARS.values(), LEDGER_PATH_ENV):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    return home


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def webhook_url() -> str:
    return WEBHOOK_URL


@pytest.fixture
def endpoint():
    return resolve_endpoint({'api_key': API_KEY, 'org': ORG}, environ={})


@pytest.fixture
def ledger_path(tmp_path):
    """A ledger file in a directory that does not exist yet."""
    return str(tmp_path / 'state' / 'ledger.sqlite3')


@pytest.fixture
def alert_args() -> dict[str, t.Any]:
    return {
        'alert_name': 'Disk almost full',
        'status': 'Alarm',
        'alert_priority': 'Critical',
        'resource_id': 'web01',
        'resource_type': 'host',
        'description': '/var is 93% full',
    }


@pytest.fixture
def make_alert(alert_args):
    """build_alert() of the default arguments, updated with keyword overrides."""

    def make(**overrides: t.Any):
        return build_alert({**alert_args, **overrides})

    return make


@pytest.fixture
def fork_context():
    """A multiprocessing context whose children inherit the collection loader and every import."""
    if 'fork' not in multiprocessing.get_all_start_methods():
        pytest.skip('these tests need the fork start method')
    return multiprocessing.get_context('fork')


class OpenerCall(t.NamedTuple):
    url: str
    kwargs: dict[str, t.Any]

    @property
    def json(self) -> t.Any:
        return json.loads(self.kwargs['data'].decode('utf-8'))


class FakeOpener:
    """Stands in for ansible.module_utils.urls.open_url: records calls and plays a script of outcomes.

    Each scripted item is used for one call; once the script is used up every call succeeds with 200.
    """

    def __init__(self) -> None:
        self.calls: list[OpenerCall] = []
        self._script: list[t.Callable[[str], t.Any]] = []

    def respond(self, status: int = 200, body: bytes = b'{"result":"ok"}') -> FakeOpener:
        self._script.append(lambda url: FakeResponse(status, body))
        return self

    def http_error(
        self, status: int, body: bytes | str = b'', headers: dict[str, str] | None = None, times: int = 1
    ) -> FakeOpener:
        """An HTTPError as open_url raises it for any non-2xx answer (it carries the secret URL)."""
        raw = body.encode('utf-8') if isinstance(body, str) else body

        def outcome(url: str) -> t.Any:
            message = http.client.HTTPMessage()
            for name, value in (headers or {}).items():
                message[name] = value
            raise HTTPError(url, status, http.client.responses.get(status, 'Unknown'), message, io.BytesIO(raw))

        self._script.extend([outcome] * times)
        return self

    def raise_(self, exc: BaseException, times: int = 1) -> FakeOpener:
        def outcome(url: str) -> t.Any:
            raise exc

        self._script.extend([outcome] * times)
        return self

    def __call__(self, url: str, **kwargs: t.Any) -> t.Any:
        self.calls.append(OpenerCall(url, kwargs))
        if self._script:
            return self._script.pop(0)(url)
        return FakeResponse()

    @property
    def bodies(self) -> list[t.Any]:
        return [call.json for call in self.calls]


@pytest.fixture
def opener() -> FakeOpener:
    return FakeOpener()


@pytest.fixture
def sleeps() -> list[float]:
    """Pass ``sleeps.append`` as the client's sleep: the delays are recorded, no time passes."""
    return []
