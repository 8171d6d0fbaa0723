# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures and hooks of the fault suite; the machinery itself is in faultlib.py."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import typing as t

import pytest

import faultlib
import pg

_OUTCOME: dict[str, t.Any] = {'passed': 0, 'failed': 0, 'skipped': 0}
_STARTED = time.time()


def pytest_runtest_logreport(report):
    # A test counts once: by its call, or by a setup/teardown that failed or skipped it.
    if report.when == 'call' or report.outcome != 'passed':
        _OUTCOME[report.outcome] = _OUTCOME.get(report.outcome, 0) + 1


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get('TEMPERSTACK_FAULTS_REPORT')
    if path:
        outcome = dict(_OUTCOME, exit_status=int(exitstatus), seconds=round(time.time() - _STARTED, 1))
        faultlib.FIGURES.write(path, outcome)


@pytest.fixture(scope='session')
def figures() -> faultlib.Figures:
    return faultlib.FIGURES


@pytest.fixture(scope='session')
def work_dir() -> t.Iterator[str]:
    """Everything the suite writes: outputs, ledgers, temp files. Scanned for the key at the end."""
    base = os.environ.get('TEMPERSTACK_FAULTS_WORK')
    if base:
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        yield base
        return
    path = tempfile.mkdtemp(prefix='temperstack-faults-')
    yield path
    if not os.environ.get('TEMPERSTACK_FAULTS_KEEP'):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def server(work_dir) -> t.Iterator[faultlib.StandIn]:
    """The plain-HTTP stand-in most tests share; reset it before use."""
    with faultlib.stand_in(os.path.join(work_dir, 'stand-in')) as running:
        yield running


@pytest.fixture(scope='session')
def harness(work_dir) -> faultlib.Harness:
    return faultlib.Harness(work_dir)


@pytest.fixture(scope='session')
def pg_server(work_dir) -> t.Iterator[pg.PgServer]:
    """The suite's own PostgreSQL server (tests stop and restart it); stopped, its data deleted, when the session ends."""
    with pg.pg_server(os.path.join(work_dir, 'postgresql'), work_dir) as running:
        yield running


@pytest.fixture
def stand_in(server: faultlib.StandIn) -> t.Iterator[faultlib.StandIn]:
    """The suite's stand-in, reset, answering at once; left that way however the test ends."""
    server.reset()
    server.latency(0)
    yield server
    server.latency(0)
    server.reset()


@pytest.fixture
def postgres(pg_server: pg.PgServer) -> t.Iterator[pg.PgServer]:
    """The suite's server, running; started again after a test that failed while it was stopped."""
    pg_server.ensure_running()
    yield pg_server
    pg_server.ensure_running()
